package policy

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"testing"
)

const gps = "GPSLatitude=35.6812N;GPSLongitude=139.7671E"

func testImage() *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, 16, 16))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 13)
	}
	return img
}

func encodePNG(t testing.TB) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, testImage()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// exifBlob is a TIFF header with a GPS IFD pointer and a location string.
func exifBlob() []byte {
	b := []byte("MM\x00\x2a\x00\x00\x00\x08\x00\x01\x88\x25\x00\x04\x00\x00\x00\x01\x00\x00\x00\x1a\x00\x00\x00\x00")
	return append(b, gps...)
}

func pngChunk(typ string, data []byte) []byte {
	c := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	c = append(c, typ...)
	c = append(c, data...)
	return binary.BigEndian.AppendUint32(c, crc32.ChecksumIEEE(c[4:]))
}

// pngWithMetadata puts eXIf and tEXt chunks after IHDR.
func pngWithMetadata(t testing.TB) []byte {
	plain := encodePNG(t)
	out := append([]byte{}, plain[:33]...)
	out = append(out, pngChunk("eXIf", exifBlob())...)
	out = append(out, pngChunk("tEXt", []byte("Comment\x00"+gps))...)
	return append(out, plain[33:]...)
}

func jpegWithExif(t testing.TB) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, testImage(), &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	plain := buf.Bytes()
	app1 := append([]byte("Exif\x00\x00"), exifBlob()...)
	seg := []byte{0xFF, 0xE1}
	seg = binary.BigEndian.AppendUint16(seg, uint16(len(app1)+2))
	seg = append(seg, app1...)
	com := append([]byte{0xFF, 0xFE, 0, byte(len(gps) + 2)}, gps...)
	out := append([]byte{}, plain[:2]...)
	out = append(out, seg...)
	out = append(out, com...)
	return append(out, plain[2:]...)
}

// vp8l is a 1×1 lossless WebP bitstream (the VP8L chunk of the smallest
// lossless WebP file).
func vp8lChunk(t testing.TB) []byte {
	f, err := base64.StdEncoding.DecodeString("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")
	if err != nil {
		t.Fatal(err)
	}
	return f[12:]
}

func riffChunk(fourCC string, data []byte) []byte {
	c := append([]byte(fourCC), binary.LittleEndian.AppendUint32(nil, uint32(len(data)))...)
	c = append(c, data...)
	if len(data)%2 == 1 {
		c = append(c, 0)
	}
	return c
}

// webpWithExif is an extended WebP: VP8X (EXIF and XMP flags set), the
// image, an EXIF chunk and an XMP chunk.
func webpWithExif(t testing.TB) []byte {
	vp8x := []byte{0x08 | 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0} // 1×1 canvas
	body := []byte("WEBP")
	body = append(body, riffChunk("VP8X", vp8x)...)
	body = append(body, vp8lChunk(t)...)
	body = append(body, riffChunk("EXIF", exifBlob())...)
	body = append(body, riffChunk("XMP ", []byte("<x:xmpmeta>"+gps+"</x:xmpmeta>"))...)
	return append(append([]byte("RIFF"), binary.LittleEndian.AppendUint32(nil, uint32(len(body)))...), body...)
}

func samePixels(t *testing.T, a, b []byte) {
	t.Helper()
	ia, _, err := image.Decode(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	ib, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("stripped image does not decode: %v", err)
	}
	if ia.Bounds() != ib.Bounds() {
		t.Fatalf("bounds %v vs %v", ia.Bounds(), ib.Bounds())
	}
	for y := ia.Bounds().Min.Y; y < ia.Bounds().Max.Y; y++ {
		for x := ia.Bounds().Min.X; x < ia.Bounds().Max.X; x++ {
			if color.RGBAModel.Convert(ia.At(x, y)) != color.RGBAModel.Convert(ib.At(x, y)) {
				t.Fatalf("pixel (%d,%d) differs", x, y)
			}
		}
	}
}

func TestUploadStripsLocationFromPhotos(t *testing.T) {
	cfg := DefaultConfig().Uploads
	for _, tc := range []struct {
		name, typ string
		data      []byte
	}{
		{"PNG", "image/png", pngWithMetadata(t)},
		{"JPEG", "image/jpeg", jpegWithExif(t)},
		{"WebP", "image/webp", webpWithExif(t)},
	} {
		for _, class := range []DeviceClass{ClassMobile, ClassOffice} {
			if !bytes.Contains(tc.data, []byte(gps)) {
				t.Fatalf("%s fixture has no location", tc.name)
			}
			out, typ, d := CheckUpload(cfg, class, tc.data)
			if d != nil {
				t.Fatalf("%s from %s: %v", tc.name, class, d)
			}
			if typ != tc.typ {
				t.Errorf("%s sniffed as %q", tc.name, typ)
			}
			if bytes.Contains(out, []byte(gps)) || bytes.Contains(out, []byte("Exif")) || bytes.Contains(out, []byte("eXIf")) {
				t.Fatalf("%s from %s still has metadata", tc.name, class)
			}
			samePixels(t, tc.data, out)
		}
	}
	// WebP: the flags say no EXIF/XMP any more and the RIFF size is right.
	out, _, _ := CheckUpload(cfg, ClassMobile, webpWithExif(t))
	if out[12+8]&(0x08|0x04) != 0 {
		t.Error("VP8X still flags EXIF/XMP")
	}
	if got := binary.LittleEndian.Uint32(out[4:]); int(got) != len(out)-8 {
		t.Errorf("RIFF size %d, file %d", got, len(out))
	}
	// With stripping off, the bytes are kept.
	keep := cfg
	keep.StripMetadata = false
	in := pngWithMetadata(t)
	if out, _, _ := CheckUpload(keep, ClassMobile, in); !bytes.Equal(out, in) {
		t.Error("strip_metadata: false changed the file")
	}
}

func TestUploadImageOnlyFromMobile(t *testing.T) {
	cfg := DefaultConfig().Uploads
	var gifBuf bytes.Buffer
	pal := image.NewPaletted(image.Rect(0, 0, 4, 4), color.Palette{color.Black, color.White})
	if err := gif.EncodeAll(&gifBuf, &gif.GIF{Image: []*image.Paletted{pal, pal}, Delay: []int{10, 10}}); err != nil {
		t.Fatal(err)
	}
	if _, typ, d := CheckUpload(cfg, ClassMobile, gifBuf.Bytes()); d != nil || typ != "image/gif" {
		t.Fatalf("animated GIF: %v %q", d, typ)
	}
	pdf := []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
	png := encodePNG(t)
	huge := pngWithHeader(t, 20000, 20000)
	for name, data := range map[string][]byte{
		"PDF":                pdf,
		"SVG":                []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>`),
		"text":               []byte("議事録"),
		"truncated PNG":      png[:len(png)/2],
		"PNG header + junk":  append(append([]byte{}, png[:40]...), bytes.Repeat([]byte{0x42}, 200)...),
		"decompression bomb": huge,
		"empty":              {},
	} {
		_, _, d := CheckUpload(cfg, ClassMobile, data)
		if d == nil || d.RuleID != RuleUploadImageOnly || d.JA == "" || d.EN == "" {
			t.Errorf("%s from a phone: %v, want %s", name, d, RuleUploadImageOnly)
		}
	}
	// The office may send a PDF, stored as application/pdf.
	out, typ, d := CheckUpload(cfg, ClassOffice, pdf)
	if d != nil || typ != "application/pdf" || !bytes.Equal(out, pdf) {
		t.Fatalf("PDF from the office: %v %q", d, typ)
	}
	// …but not what is outside its list.
	exe := append([]byte("MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"), make([]byte, 64)...)
	if _, _, d := CheckUpload(cfg, ClassOffice, exe); d == nil || d.RuleID != RuleUploadType {
		t.Fatalf("executable from the office: %v", d)
	}
	// An empty list allows every type.
	open := cfg
	open.OfficeAllowedTypes = nil
	if _, _, d := CheckUpload(open, ClassOffice, exe); d != nil {
		t.Fatalf("empty allow-list: %v", d)
	}
}

func TestUploadSizeByClass(t *testing.T) {
	cfg := DefaultConfig().Uploads
	cfg.MobileMaxBytes, cfg.OfficeMaxBytes = 100, 1000
	data := append([]byte("%PDF-1.4\n"), make([]byte, 500)...)
	if _, _, d := CheckUpload(cfg, ClassMobile, data); d == nil || d.RuleID != RuleUploadSize {
		t.Fatalf("mobile over its limit: %v", d)
	}
	if _, _, d := CheckUpload(cfg, ClassOffice, data); d != nil {
		t.Fatalf("office under its limit: %v", d)
	}
}

// pngWithHeader is a PNG whose IHDR claims w×h but holds almost nothing.
func pngWithHeader(t testing.TB, w, h uint32) []byte {
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 2, 0, 0, 0)
	out := append([]byte{}, pngSignature...)
	out = append(out, pngChunk("IHDR", ihdr)...)
	out = append(out, pngChunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})...)
	return append(out, pngChunk("IEND", nil)...)
}

func FuzzCheckUpload(f *testing.F) {
	f.Add(pngWithMetadata(f))
	f.Add(jpegWithExif(f))
	f.Add(webpWithExif(f))
	f.Add([]byte("%PDF-1.4"))
	cfg := DefaultConfig().Uploads
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, class := range []DeviceClass{ClassMobile, ClassOffice} {
			out, _, d := CheckUpload(cfg, class, data)
			if d == nil && class == ClassMobile {
				if _, _, err := image.Decode(bytes.NewReader(out)); err != nil {
					t.Fatalf("accepted from a phone but does not decode after stripping: %v", err)
				}
			}
		}
	})
}
