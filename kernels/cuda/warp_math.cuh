// warpcam per-pixel warp math, shared by the CUDA kernels (warp_kernels.cu, compiled with NVRTC
// through cupy.RawModule) and the host build used by the tests (host_loops.cpp, g++ via
// kernels/hostbuild.py). Every function here is __host__ __device__ so both builds run the very
// same arithmetic; only the thread-index plumbing differs.
//
// Conventions (the WarpJob contract, warpcam/core/types.py):
//   - Images are H x W x 3 uint8 BGR, row-major, C-contiguous.
//   - Pixel centres are at integer coordinates; x to the right, y down.
//   - A job's affine A maps crop pixel (u, v) to frame pixel (x, y); inv = A^-1.
//   - Crop-space fields are float32, h x w x C, channel-interleaved, stored in one flat buffer
//     at the offsets (in floats) given by the job; offset -1 means "field absent".
//   - Bilinear sampling uses the exact weights (1-f, f) in float32. Border modes:
//       WC_BORDER_ZERO      a neighbour outside the field reads 0   (cv2.BORDER_CONSTANT, 0;
//                           torch grid_sample padding_mode="zeros", align_corners=True)
//       WC_BORDER_REPLICATE neighbours clamp to the edge          (cv2.BORDER_REPLICATE;
//                           torch grid_sample padding_mode="border", align_corners=True)
//   - Rounding of the stored bytes: rintf (round half to even), clamped to [0, 255].
#ifndef WARPCAM_WARP_MATH_CUH
#define WARPCAM_WARP_MATH_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define WC_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#define WC_HD inline
#endif

#define WC_BORDER_ZERO 0
#define WC_BORDER_REPLICATE 1
#define WC_TILE 16         // composite: one 16 x 16 thread block per frame tile
#define WC_CROP_THREADS 256  // crop: threads per block along the ROI's pixels

// One WarpJob, flattened. 28 four-byte fields, no padding: the Python side mirrors it with a
// numpy structured dtype (kernels/cuda/__init__.py, JOB_DTYPE) and the tests check the size.
struct WcJob {
    float a[6];        // crop -> frame affine, row-major 2 x 3
    float inv[6];      // frame -> crop affine (A^-1), row-major 2 x 3
    int h, w;          // crop size
    int x0, y0, x1, y1;  // frame box, exclusive end (kernels.cuda.job_box: WarpJob.frame_bbox
                         // shrunk to where alpha can be > 0)
    int flow;          // offset of flow h x w x 2 (crop pixels, backward warp)
    int alpha;         // offset of alpha h x w (border: zero)
    int light;         // offset of lightness h x w (border: replicate) or -1
    int palw;          // offset of palette weights h x w (border: zero) or -1
    int color;         // offset of colour h x w x 3 BGR 0-255 (border: replicate) or -1
    int att;           // offset of attention h x w (border: replicate) or -1 (iff color is -1)
    float pal[3];      // palette colour BGR 0-255
    int pad_;
};
static_assert(sizeof(WcJob) == 112, "WcJob layout must match JOB_DTYPE");

// One ROI to crop, flattened (16 four-byte fields): ROI_DTYPE on the Python side.
struct WcRoi {
    float a[6];        // crop -> frame affine (any flip already folded in)
    float scale[3];    // per output channel (R, G, B): out = pixel * scale + bias
    float bias[3];
    int h, w;          // crop size
    int out_offset;    // offset (in elements) of this ROI's 3 x h x w planes in the output
    int border;        // WC_BORDER_ZERO or WC_BORDER_REPLICATE for frame samples
};
static_assert(sizeof(WcRoi) == 64, "WcRoi layout must match ROI_DTYPE");

WC_HD float wc_clampf(float v, float lo, float hi) { return fminf(fmaxf(v, lo), hi); }

WC_HD int wc_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Integer corner and fraction of a sample coordinate. The coordinate is first clamped to
// [-2, n + 1]: every position beyond that reads the same (0 or the edge) in both border modes,
// and the clamp keeps NaN and huge flows from overflowing the float -> int conversion.
WC_HD void wc_corner(float x, int n, int* i0, float* f) {
    x = wc_clampf(x, -2.0f, (float)n + 1.0f);
    const float fl = floorf(x);
    *i0 = (int)fl;
    *f = x - fl;
}

// Bilinear sample of a C-channel float field (h x w x C, interleaved) at (u, v).
template <int C>
WC_HD void wc_sample_field(const float* field, int h, int w, float u, float v, int border,
                           float* out) {
    int u0, v0;
    float fu, fv;
    wc_corner(u, w, &u0, &fu);
    wc_corner(v, h, &v0, &fv);
    const float wts[4] = {(1.0f - fu) * (1.0f - fv), fu * (1.0f - fv), (1.0f - fu) * fv, fu * fv};
    float acc[C];
    for (int c = 0; c < C; ++c) acc[c] = 0.0f;
    for (int k = 0; k < 4; ++k) {
        int uu = u0 + (k & 1);
        int vv = v0 + (k >> 1);
        if (border == WC_BORDER_REPLICATE) {
            uu = wc_clampi(uu, 0, w - 1);
            vv = wc_clampi(vv, 0, h - 1);
        } else if (uu < 0 || uu >= w || vv < 0 || vv >= h) {
            continue;
        }
        const float* p = field + ((long long)vv * w + uu) * C;
        for (int c = 0; c < C; ++c) acc[c] += wts[k] * p[c];
    }
    for (int c = 0; c < C; ++c) out[c] = acc[c];
}

// Bilinear sample of the uint8 BGR frame (H x W x 3) at (x, y), channels in frame order.
WC_HD void wc_sample_frame(const unsigned char* img, int H, int W, float x, float y, int border,
                           float out[3]) {
    int x0, y0;
    float fx, fy;
    wc_corner(x, W, &x0, &fx);
    wc_corner(y, H, &y0, &fy);
    const float wts[4] = {(1.0f - fx) * (1.0f - fy), fx * (1.0f - fy), (1.0f - fx) * fy, fx * fy};
    out[0] = out[1] = out[2] = 0.0f;
    for (int k = 0; k < 4; ++k) {
        int xx = x0 + (k & 1);
        int yy = y0 + (k >> 1);
        if (border == WC_BORDER_REPLICATE) {
            xx = wc_clampi(xx, 0, W - 1);
            yy = wc_clampi(yy, 0, H - 1);
        } else if (xx < 0 || xx >= W || yy < 0 || yy >= H) {
            continue;
        }
        const unsigned char* p = img + ((long long)yy * W + xx) * 3;
        out[0] += wts[k] * (float)p[0];
        out[1] += wts[k] * (float)p[1];
        out[2] += wts[k] * (float)p[2];
    }
}

WC_HD unsigned char wc_to_u8(float v) { return (unsigned char)wc_clampf(rintf(v), 0.0f, 255.0f); }

// Apply one job to the frame pixel (x, y), whose current output value is px (BGR bytes; on
// entry the result of the earlier jobs). Returns 1 and updates px when the job writes the
// pixel (alpha > 0 there), else 0 and leaves px untouched. Per pixel, in the contract's order:
//   (u, v) = A^-1 (x, y); f = flow(u, v); warped = frame(A (u + f_x, v + f_y)) = frame((x, y) + A_lin f)
//   warped *= lightness(u, v); warped = (1 - w) warped + w palette; warped = a warped + (1 - a) color
//   px = rint(alpha warped + (1 - alpha) px)
WC_HD int wc_apply_job(const unsigned char* src, int H, int W, const WcJob& j, const float* fields,
                       int x, int y, unsigned char px[3]) {
    if (x < j.x0 || x >= j.x1 || y < j.y0 || y >= j.y1) return 0;
    const float fx = (float)x, fy = (float)y;
    const float u = j.inv[0] * fx + (j.inv[1] * fy + j.inv[2]);
    const float v = j.inv[3] * fx + (j.inv[4] * fy + j.inv[5]);
    float alpha;
    wc_sample_field<1>(fields + j.alpha, j.h, j.w, u, v, WC_BORDER_ZERO, &alpha);
    if (!(alpha > 0.0f)) return 0;
    alpha = fminf(alpha, 1.0f);
    float flow[2];
    wc_sample_field<2>(fields + j.flow, j.h, j.w, u, v, WC_BORDER_REPLICATE, flow);
    // A (u + f) = (x, y) + A_lin f: the source position is the pixel plus the flow mapped to
    // the frame (exact in x, y; going through u + f would round it at the crop's scale).
    const float mx = fx + (j.a[0] * flow[0] + j.a[1] * flow[1]);
    const float my = fy + (j.a[3] * flow[0] + j.a[4] * flow[1]);
    float warped[3];
    wc_sample_frame(src, H, W, mx, my, WC_BORDER_REPLICATE, warped);
    if (j.light >= 0) {
        float l;
        wc_sample_field<1>(fields + j.light, j.h, j.w, u, v, WC_BORDER_REPLICATE, &l);
        for (int c = 0; c < 3; ++c) warped[c] *= l;
    }
    if (j.palw >= 0) {
        float wt;
        wc_sample_field<1>(fields + j.palw, j.h, j.w, u, v, WC_BORDER_ZERO, &wt);
        for (int c = 0; c < 3; ++c) warped[c] = warped[c] * (1.0f - wt) + wt * j.pal[c];
    }
    if (j.color >= 0) {
        float att, col[3];
        wc_sample_field<1>(fields + j.att, j.h, j.w, u, v, WC_BORDER_REPLICATE, &att);
        wc_sample_field<3>(fields + j.color, j.h, j.w, u, v, WC_BORDER_REPLICATE, col);
        for (int c = 0; c < 3; ++c) warped[c] = att * warped[c] + (1.0f - att) * col[c];
    }
    for (int c = 0; c < 3; ++c)
        px[c] = wc_to_u8(alpha * warped[c] + (1.0f - alpha) * (float)px[c]);
    return 1;
}

// Body of one composite thread: pixel (tx, ty) of tile `tile` (tiles holds (tile_x, tile_y)
// pairs). Jobs run in list order on the pixel, so where ROIs overlap a later job is blended over
// the result of the earlier ones, and no two threads ever write the same pixel. src is the input
// frame, dst the output (a copy of src on entry); only pixels some job writes are stored.
WC_HD void wc_composite_thread(const unsigned char* src, unsigned char* dst, int H, int W,
                               const WcJob* jobs, int njobs, const float* fields,
                               const int* tiles, int tile, int tx, int ty) {
    const int x = tiles[2 * tile] * WC_TILE + tx;
    const int y = tiles[2 * tile + 1] * WC_TILE + ty;
    if (x >= W || y >= H) return;
    const long long at = ((long long)y * W + x) * 3;
    unsigned char px[3] = {src[at], src[at + 1], src[at + 2]};
    int written = 0;
    for (int k = 0; k < njobs; ++k) written |= wc_apply_job(src, H, W, jobs[k], fields, x, y, px);
    if (written) {
        dst[at] = px[0];
        dst[at + 1] = px[1];
        dst[at + 2] = px[2];
    }
}

// One crop sample: ROI pixel (u, v) -> normalised RGB (frame BGR swapped), before the store.
WC_HD void wc_crop_pixel(const unsigned char* src, int H, int W, const WcRoi& r, int u, int v,
                         float rgb[3]) {
    const float fu = (float)u, fv = (float)v;
    const float x = r.a[0] * fu + r.a[1] * fv + r.a[2];
    const float y = r.a[3] * fu + r.a[4] * fv + r.a[5];
    float bgr[3];
    wc_sample_frame(src, H, W, x, y, r.border, bgr);
    for (int c = 0; c < 3; ++c) rgb[c] = bgr[2 - c] * r.scale[c] + r.bias[c];
}

// float32 -> IEEE binary16 bits, round to nearest even (what __float2half_rn does). On the
// device this is one cvt instruction; the host version is the bit-exact software equivalent,
// checked against numpy.float16 by the tests.
WC_HD unsigned short wc_float_to_half_bits(float f) {
#if defined(__CUDA_ARCH__)
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    union { float f; unsigned int u; } in;
    in.f = f;
    const unsigned int x = in.u;
    const unsigned int sign = (x >> 16) & 0x8000u;
    const unsigned int absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u)  // inf or NaN (keep a quiet NaN)
        return (unsigned short)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x0200u : 0u));
    if (absx >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // rounds to inf
    if (absx < 0x33000001u) return (unsigned short)sign;               // rounds to +-0
    int e = (int)(absx >> 23);
    unsigned int mant = (absx & 0x7fffffu) | 0x800000u;
    int shift;
    unsigned int base;
    if (e < 113) {  // subnormal half
        shift = 126 - e;  // value = mant * 2^(e - 150) = q * 2^-24
        base = 0;
    } else {
        shift = 13;
        base = (unsigned int)(e - 112) << 10;
        mant &= 0x7fffffu;
    }
    unsigned int q = mant >> shift;
    const unsigned int rem = mant & ((1u << shift) - 1u);
    const unsigned int half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;  // may carry into the exponent: correct
    return (unsigned short)(sign | (base + q));
#endif
}

// Output stores of the crop: float32, or IEEE binary16 bits (fp16 network inputs).
struct WcStoreF32 {
    float* out;
    WC_HD void operator()(long long i, float v) const { out[i] = v; }
};
struct WcStoreF16 {
    unsigned short* out;
    WC_HD void operator()(long long i, float v) const { out[i] = wc_float_to_half_bits(v); }
};

// Body of one crop thread: ROI `roi`, pixel index p (row-major in the ROI) = block * WC_CROP_THREADS
// + thread. Writes the three planes (R, G, B) of the ROI's NCHW slot through `store`.
template <typename Store>
WC_HD void wc_crop_thread(const unsigned char* src, int H, int W, const WcRoi* rois, int roi,
                          int p, Store store) {
    const WcRoi& r = rois[roi];
    if (p >= r.h * r.w) return;
    const int v = p / r.w, u = p - v * r.w;
    float rgb[3];
    wc_crop_pixel(src, H, W, r, u, v, rgb);
    const long long plane = (long long)r.h * r.w;
    for (int c = 0; c < 3; ++c) store(r.out_offset + c * plane + p, rgb[c]);
}

#endif  // WARPCAM_WARP_MATH_CUH
