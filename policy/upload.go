package policy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/gif"
	_ "image/jpeg" // decoders for image.Decode
	_ "image/png"
	"strings"

	"github.com/gabriel-vasile/mimetype"
	_ "golang.org/x/image/webp"
)

// Upload rule IDs.
const (
	RuleUploadImageOnly = "upload-image-only" // a mobile device sent a non-image
	RuleUploadType      = "upload-type"       // an office device sent a type not allowed
	RuleUploadSize      = "upload-size"       // over the class's size limit
)

// maxPixels guards against decompression bombs: a small file that claims
// an enormous picture.
const maxPixels = 100_000_000

var mobileImageTypes = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true}

// CheckUpload inspects an upload's bytes, never trusting the declared type.
// It returns the bytes to store (image metadata stripped when
// c.StripMetadata) and the sniffed content type, or a denial.
func CheckUpload(c UploadConfig, class DeviceClass, data []byte) (out []byte, contentType string, d *Denial) {
	limit := c.OfficeMaxBytes
	if class == ClassMobile {
		limit = c.MobileMaxBytes
	}
	if int64(len(data)) > limit {
		mb := float64(limit) / (1 << 20)
		return nil, "", &Denial{RuleID: RuleUploadSize,
			JA: fmt.Sprintf("ファイルが大きすぎます（上限 %.0f MB）。", mb),
			EN: fmt.Sprintf("The file is too large (limit %.0f MB).", mb)}
	}
	typ := mimetype.Detect(data).String()
	base, _, _ := strings.Cut(typ, ";")
	base = strings.TrimSpace(base)

	if class == ClassMobile && c.MobileImagesOnly {
		if !mobileImageTypes[base] {
			return nil, base, imageOnly()
		}
		if err := decodeFully(base, data); err != nil {
			return nil, base, imageOnly()
		}
	} else if !typeAllowed(c.OfficeAllowedTypes, base) {
		return nil, base, &Denial{RuleID: RuleUploadType,
			JA: fmt.Sprintf("この種類のファイル（%s）は送信できません。", base),
			EN: fmt.Sprintf("Files of this type (%s) may not be sent.", base)}
	}
	if c.StripMetadata {
		stripped, err := StripMetadata(base, data)
		switch {
		case err == nil:
			data = stripped
		case class == ClassMobile:
			return nil, base, imageOnly()
		}
		// An office file that is not a well-formed image of its sniffed
		// type is kept as sent.
	}
	return data, typ, nil
}

func imageOnly() *Denial {
	return &Denial{RuleID: RuleUploadImageOnly,
		JA: "スマートフォンからは画像（JPEG・PNG・GIF・WebP）のみ送信できます。",
		EN: "Only images (JPEG, PNG, GIF, WebP) can be sent from a mobile device."}
}

func typeAllowed(list []string, typ string) bool {
	if len(list) == 0 {
		return true
	}
	for _, a := range list {
		if a == typ || (strings.HasSuffix(a, "/*") && strings.HasPrefix(typ, strings.TrimSuffix(a, "*"))) {
			return true
		}
	}
	return false
}

// decodeFully decodes every pixel (every frame of a GIF), after checking
// the claimed size.
func decodeFully(typ string, data []byte) error {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return err
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return errors.New("image dimensions out of range")
	}
	if typ == "image/gif" {
		_, err = gif.DecodeAll(bytes.NewReader(data))
		return err
	}
	_, _, err = image.Decode(bytes.NewReader(data))
	return err
}

// StripMetadata removes EXIF, XMP and text metadata (camera, GPS location)
// from a JPEG, PNG or WebP at the container level, leaving the pixel data
// byte for byte. Other types are returned unchanged.
func StripMetadata(typ string, data []byte) ([]byte, error) {
	switch typ {
	case "image/jpeg":
		return stripJPEG(data)
	case "image/png":
		return stripPNG(data)
	case "image/webp":
		return stripWebP(data)
	}
	return data, nil
}

var errMalformed = errors.New("malformed image container")

// stripJPEG drops APP1 (Exif, XMP), APP13 (Photoshop/IPTC) and COM
// segments; everything from the first SOS on is copied verbatim.
func stripJPEG(data []byte) ([]byte, error) {
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return nil, errMalformed
	}
	out := make([]byte, 0, len(data))
	out = append(out, 0xFF, 0xD8)
	i := 2
	for {
		if i >= len(data) || data[i] != 0xFF {
			return nil, errMalformed
		}
		for i < len(data) && data[i] == 0xFF { // fill bytes
			i++
		}
		if i >= len(data) {
			return nil, errMalformed
		}
		marker := data[i]
		i++
		switch {
		case marker == 0xD9: // EOI
			return append(out, 0xFF, 0xD9), nil
		case marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7): // no length
			out = append(out, 0xFF, marker)
			continue
		}
		if i+2 > len(data) {
			return nil, errMalformed
		}
		n := int(binary.BigEndian.Uint16(data[i:]))
		if n < 2 || i+n > len(data) {
			return nil, errMalformed
		}
		if marker == 0xDA { // SOS: the entropy-coded data and the rest
			out = append(out, 0xFF, marker)
			return append(out, data[i:]...), nil
		}
		if marker != 0xE1 && marker != 0xED && marker != 0xFE {
			out = append(out, 0xFF, marker)
			out = append(out, data[i:i+n]...)
		}
		i += n
	}
}

var pngSignature = []byte("\x89PNG\r\n\x1a\n")

// stripPNG drops the eXIf, tEXt, zTXt, iTXt and tIME chunks; the others are
// copied whole, CRCs included.
func stripPNG(data []byte) ([]byte, error) {
	if !bytes.HasPrefix(data, pngSignature) {
		return nil, errMalformed
	}
	out := make([]byte, 0, len(data))
	out = append(out, pngSignature...)
	for i := len(pngSignature); ; {
		if i+8 > len(data) {
			return nil, errMalformed
		}
		n := int(binary.BigEndian.Uint32(data[i:]))
		end := i + 12 + n
		if n < 0 || n > len(data) || end > len(data) {
			return nil, errMalformed
		}
		switch string(data[i+4 : i+8]) {
		case "eXIf", "tEXt", "zTXt", "iTXt", "tIME":
		default:
			out = append(out, data[i:end]...)
		}
		if string(data[i+4:i+8]) == "IEND" {
			return out, nil
		}
		i = end
	}
}

// stripWebP drops the EXIF and XMP chunks, clears their flags in VP8X and
// rewrites the RIFF size.
func stripWebP(data []byte) ([]byte, error) {
	if len(data) < 12 || string(data[0:4]) != "RIFF" || string(data[8:12]) != "WEBP" {
		return nil, errMalformed
	}
	riff := int(binary.LittleEndian.Uint32(data[4:]))
	if riff < 4 || 8+riff > len(data) {
		return nil, errMalformed
	}
	body := data[12 : 8+riff]
	out := make([]byte, 12, len(data))
	copy(out, data[:12])
	for i := 0; i < len(body); {
		if i+8 > len(body) {
			return nil, errMalformed
		}
		fourCC := string(body[i : i+4])
		n := int(binary.LittleEndian.Uint32(body[i+4:]))
		end := i + 8 + n + n%2 // chunks are padded to even sizes
		if n < 0 || n > len(body) || i+8+n > len(body) {
			return nil, errMalformed
		}
		end = min(end, len(body))
		switch fourCC {
		case "EXIF", "XMP ":
		case "VP8X":
			chunk := append([]byte{}, body[i:end]...)
			if n < 1 {
				return nil, errMalformed
			}
			chunk[8] &^= 0x08 | 0x04 // EXIF and XMP present
			out = append(out, chunk...)
		default:
			out = append(out, body[i:end]...)
		}
		i = end
	}
	binary.LittleEndian.PutUint32(out[4:], uint32(len(out)-8))
	return out, nil
}
