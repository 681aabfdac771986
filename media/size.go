package media

import "image"

// The spec's thumbnail sizes are minimums: a thumbnail is at least the
// requested size wherever the original allows it, and never larger than
// the original. Requests are first rounded up to a fixed ladder of sizes,
// so that the legacy endpoint, which anyone may call, cannot fill the disk
// with one cached file per pixel count; the five sizes the spec suggests
// (32x32 and 96x96 crop, 320x240, 640x480 and 800x600 scale) are on it, as
// are the device-pixel-ratio multiples clients ask for.
var sizeLadder = []int{
	32, 48, 64, 96, 128, 160, 192, 240, 256, 320, 360, 480, 512, 600, 640,
	720, 768, 800, 960, 1024, 1080, 1200, 1280, 1440, 1600, 1920, 2048,
}

// maxRequestSide bounds a requested side: anything larger asks for the
// original of every image this server will thumbnail anyway.
const maxRequestSide = 1 << 16

// snap rounds a requested side up to the ladder; past its top, to a
// multiple of 512.
func snap(n int) int {
	n = min(n, maxRequestSide)
	for _, s := range sizeLadder {
		if n <= s {
			return s
		}
	}
	return (n + 511) / 512 * 512
}

// plan is what one request makes of one image.
type plan struct {
	w, h     int             // output size
	src      image.Rectangle // region of the original scaled to w×h
	cropped  bool            // src is smaller than the whole original
	original bool            // the output is the original at its own size
}

// planFor sizes a thumbnail of a W×H image for a request of reqW×reqH.
//
// Both methods first scale the image, keeping its aspect, by the smallest
// factor that covers the request (capped at 1: never upscale). scale
// returns that; crop then cuts the centre to the request's size, or to as
// much of it as the scaled image has.
func planFor(W, H, reqW, reqH int, crop bool) plan {
	w, h := int64(snap(reqW)), int64(snap(reqH))
	W64, H64 := int64(W), int64(H)
	sw, sh := W64, H64  // the original scaled to cover w×h
	if w*H64 >= h*W64 { // width decides the factor w/W
		if w < W64 {
			sw, sh = w, max(1, ceilDiv(H64*w, W64))
		}
	} else if h < H64 {
		sw, sh = max(1, ceilDiv(W64*h, H64)), h
	}
	full := image.Rect(0, 0, W, H)
	if !crop {
		return plan{w: int(sw), h: int(sh), src: full, original: sw == W64 && sh == H64}
	}
	ow, oh := min(w, sw), min(h, sh)
	// The region of the original with the output's aspect (computed from
	// the original's sides, not the rounded scaled ones).
	var cw, ch int64
	switch {
	case sw == W64 && sh == H64: // not scaled: cut at the original's size
		cw, ch = ow, oh
	case ow == sw:
		cw, ch = W64, min(H64, max(1, (oh*W64+ow/2)/ow))
	default:
		cw, ch = min(W64, max(1, (ow*H64+oh/2)/oh)), H64
	}
	x0, y0 := (W64-cw)/2, (H64-ch)/2
	p := plan{w: int(ow), h: int(oh), src: image.Rect(int(x0), int(y0), int(x0+cw), int(y0+ch))}
	p.cropped = p.src != full
	p.original = !p.cropped && p.w == W && p.h == H
	return p
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// method names the cache file: a crop that cuts nothing is a scale.
func (p plan) method() string {
	if p.cropped {
		return "crop"
	}
	return "scale"
}
