package media

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers the WebP decoder
)

// scaleTmpBudget bounds the float buffer x/image/draw's kernel scalers
// allocate (32 bytes per destination column per source row); past it the
// last step uses the buffer-free approximate bilinear scaler instead.
const scaleTmpBudget = 96 << 20

// decodedBytes estimates the memory a decoded image of cfg takes, so a
// small file declaring an enormous picture is refused before it is decoded.
func decodedBytes(cfg image.Config) int64 {
	var bpp int64
	switch cfg.ColorModel {
	case color.GrayModel, color.AlphaModel:
		bpp = 1
	case color.Gray16Model, color.Alpha16Model:
		bpp = 2
	case color.RGBA64Model, color.NRGBA64Model:
		bpp = 8
	case color.YCbCrModel:
		bpp = 3 // 4:4:4 at worst
	default:
		bpp = 4
		if _, ok := cfg.ColorModel.(color.Palette); ok {
			bpp = 1
		}
	}
	return int64(cfg.Width) * int64(cfg.Height) * bpp
}

// decodeFirst decodes a whole image, or a GIF's first frame laid on its
// logical screen (a frame may cover only part of it).
func decodeFirst(r io.Reader, format string, cfg image.Config) (image.Image, error) {
	if format != "gif" {
		img, _, err := image.Decode(r)
		return img, err
	}
	frame, err := gif.Decode(r)
	if err != nil {
		return nil, err
	}
	screen := image.Rect(0, 0, cfg.Width, cfg.Height)
	if frame.Bounds() == screen {
		return frame, nil
	}
	canvas := image.NewRGBA(screen)
	draw.Draw(canvas, frame.Bounds(), frame, frame.Bounds().Min, draw.Over)
	return canvas, nil
}

// render makes the w×h thumbnail of src's region sr. A large reduction
// first averages k×k blocks (cheap, alias-free, and it keeps the kernel
// scaler's buffer small); Catmull-Rom does the rest.
func render(src image.Image, sr image.Rectangle, w, h int) image.Image {
	if k := min(sr.Dx()/w, sr.Dy()/h); k >= 2 {
		src = boxShrink(src, sr, k)
		sr = src.Bounds()
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	switch {
	case sr.Dx() == w && sr.Dy() == h:
		draw.Draw(dst, dst.Bounds(), src, sr.Min, draw.Src)
	case int64(w)*int64(sr.Dy())*32 > scaleTmpBudget:
		draw.ApproxBiLinear.Scale(dst, dst.Bounds(), src, sr, draw.Src, nil)
	default:
		draw.CatmullRom.Scale(dst, dst.Bounds(), src, sr, draw.Src, nil)
	}
	return dst
}

// boxShrink averages each k×k block of src's region sr into one pixel of
// an RGBA image (premultiplied, so transparent pixels lend no colour).
func boxShrink(src image.Image, sr image.Rectangle, k int) *image.RGBA {
	ow, oh := (sr.Dx()+k-1)/k, (sr.Dy()+k-1)/k
	dst := image.NewRGBA(image.Rect(0, 0, ow, oh))
	sums := make([]uint32, ow*4)
	add, ycc := rowAdder(src, sr.Min.X, sr.Max.X, k)
	for oy := 0; oy < oh; oy++ {
		clear(sums)
		y0, y1 := sr.Min.Y+oy*k, min(sr.Min.Y+(oy+1)*k, sr.Max.Y)
		for y := y0; y < y1; y++ {
			add(y, sums)
		}
		row := dst.Pix[oy*dst.Stride:]
		for ox := 0; ox < ow; ox++ {
			n := uint32((y1 - y0) * (min(sr.Min.X+(ox+1)*k, sr.Max.X) - (sr.Min.X + ox*k)))
			s, p := sums[ox*4:][:4], row[ox*4:][:4]
			if ycc {
				p[0], p[1], p[2] = color.YCbCrToRGB(uint8(s[0]/n), uint8(s[1]/n), uint8(s[2]/n))
				p[3] = 255
				continue
			}
			p[0], p[1], p[2], p[3] = uint8(s[0]/n), uint8(s[1]/n), uint8(s[2]/n), uint8(s[3]/n)
		}
	}
	return dst
}

// rowAdder returns a function adding row y of src (columns x0 to x1) to
// sums, four per output pixel of k source columns. The common decoded
// types are read straight from their pixel slices; JPEG's YCbCr is summed
// as Y, Cb, Cr (ycc: convert after averaging, which is linear).
func rowAdder(src image.Image, x0, x1, k int) (add func(y int, sums []uint32), ycc bool) {
	switch img := src.(type) {
	case *image.YCbCr:
		return func(y int, sums []uint32) {
			yi := img.YOffset(x0, y)
			for x := x0; x < x1; x, yi = x+1, yi+1 {
				s := sums[(x-x0)/k*4:][:3]
				ci := img.COffset(x, y)
				s[0] += uint32(img.Y[yi])
				s[1] += uint32(img.Cb[ci])
				s[2] += uint32(img.Cr[ci])
			}
		}, true
	case *image.RGBA:
		return func(y int, sums []uint32) {
			p := img.Pix[img.PixOffset(x0, y):]
			for x := x0; x < x1; x, p = x+1, p[4:] {
				s := sums[(x-x0)/k*4:][:4]
				s[0] += uint32(p[0])
				s[1] += uint32(p[1])
				s[2] += uint32(p[2])
				s[3] += uint32(p[3])
			}
		}, false
	case *image.NRGBA:
		return func(y int, sums []uint32) {
			p := img.Pix[img.PixOffset(x0, y):]
			for x := x0; x < x1; x, p = x+1, p[4:] {
				s := sums[(x-x0)/k*4:][:4]
				a := uint32(p[3])
				s[0] += uint32(p[0]) * a / 255
				s[1] += uint32(p[1]) * a / 255
				s[2] += uint32(p[2]) * a / 255
				s[3] += a
			}
		}, false
	case *image.Gray:
		return func(y int, sums []uint32) {
			p := img.Pix[img.PixOffset(x0, y):]
			for x := x0; x < x1; x++ {
				s := sums[(x-x0)/k*4:][:4]
				v := uint32(p[x-x0])
				s[0] += v
				s[1] += v
				s[2] += v
				s[3] += 255
			}
		}, false
	case *image.Paletted:
		var pal [256][4]uint32
		for i, c := range img.Palette {
			r, g, b, a := c.RGBA()
			pal[i] = [4]uint32{r >> 8, g >> 8, b >> 8, a >> 8}
		}
		return func(y int, sums []uint32) {
			p := img.Pix[img.PixOffset(x0, y):]
			for x := x0; x < x1; x++ {
				s, c := sums[(x-x0)/k*4:][:4], &pal[p[x-x0]]
				s[0] += c[0]
				s[1] += c[1]
				s[2] += c[2]
				s[3] += c[3]
			}
		}, false
	}
	return func(y int, sums []uint32) {
		for x := x0; x < x1; x++ {
			s := sums[(x-x0)/k*4:][:4]
			r, g, b, a := src.At(x, y).RGBA()
			s[0] += r >> 8
			s[1] += g >> 8
			s[2] += b >> 8
			s[3] += a >> 8
		}
	}, false
}

// opaque reports whether every pixel of src's region sr is opaque, which
// decides JPEG (no alpha) or PNG (alpha matters) for the thumbnail.
func opaque(src image.Image, sr image.Rectangle) bool {
	switch img := src.(type) {
	case *image.YCbCr, *image.Gray, *image.Gray16, *image.CMYK:
		return true
	case interface {
		SubImage(image.Rectangle) image.Image
	}:
		if o, ok := img.SubImage(sr).(interface{ Opaque() bool }); ok {
			return o.Opaque()
		}
	}
	return false
}

// encode writes a thumbnail: JPEG when no pixel is transparent, else PNG.
func encode(w io.Writer, img image.Image, alpha bool) (contentType string, err error) {
	if alpha {
		return "image/png", png.Encode(w, img)
	}
	return "image/jpeg", jpeg.Encode(w, img, &jpeg.Options{Quality: 85})
}

// animated reports whether an image file holds more than one frame: an
// animated GIF, an APNG, or a WebP with the animation flag. It reads
// container headers only, never pixel data.
func animated(r io.Reader, format string) (bool, error) {
	br := bufio.NewReader(r)
	switch format {
	case "gif":
		return gifFrames(br, 2)
	case "png":
		return apng(br)
	case "webp":
		hdr := make([]byte, 21)
		if _, err := io.ReadFull(br, hdr); err != nil {
			return false, nil // too short for VP8X: a simple WebP
		}
		return string(hdr[12:16]) == "VP8X" && hdr[20]&0x02 != 0, nil
	}
	return false, nil
}

var errBadContainer = errors.New("malformed image container")

// apng reports whether a PNG has an acTL chunk before its first IDAT.
func apng(br *bufio.Reader) (bool, error) {
	if _, err := br.Discard(8); err != nil {
		return false, errBadContainer
	}
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return false, errBadContainer
		}
		switch string(hdr[4:]) {
		case "acTL":
			return true, nil
		case "IDAT", "IEND":
			return false, nil
		}
		if _, err := br.Discard(int(binary.BigEndian.Uint32(hdr[:4])) + 4); err != nil {
			return false, errBadContainer
		}
	}
}

// gifFrames reports whether a GIF has at least n image descriptors,
// skipping LZW data unread.
func gifFrames(br *bufio.Reader, n int) (bool, error) {
	var hdr [13]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil || !bytes.HasPrefix(hdr[:], []byte("GIF8")) {
		return false, errBadContainer
	}
	if hdr[10]&0x80 != 0 {
		if _, err := br.Discard(3 << (hdr[10]&7 + 1)); err != nil {
			return false, errBadContainer
		}
	}
	frames := 0
	for {
		b, err := br.ReadByte()
		if err != nil {
			return false, errBadContainer
		}
		switch b {
		case 0x21: // extension: label, then sub-blocks
			if _, err := br.ReadByte(); err != nil {
				return false, errBadContainer
			}
		case 0x2C: // image descriptor, optional local table, LZW size, sub-blocks
			if frames++; frames >= n {
				return true, nil
			}
			var d [9]byte
			if _, err := io.ReadFull(br, d[:]); err != nil {
				return false, errBadContainer
			}
			if d[8]&0x80 != 0 {
				if _, err := br.Discard(3 << (d[8]&7 + 1)); err != nil {
					return false, errBadContainer
				}
			}
			if _, err := br.ReadByte(); err != nil {
				return false, errBadContainer
			}
		case 0x3B:
			return false, nil
		default:
			return false, fmt.Errorf("%w: block 0x%02x", errBadContainer, b)
		}
		if err := skipSubBlocks(br); err != nil {
			return false, err
		}
	}
}

func skipSubBlocks(br *bufio.Reader) error {
	for {
		size, err := br.ReadByte()
		if err != nil {
			return errBadContainer
		}
		if size == 0 {
			return nil
		}
		if _, err := br.Discard(int(size)); err != nil {
			return errBadContainer
		}
	}
}
