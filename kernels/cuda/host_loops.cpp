// Host build of the per-pixel warp math (tests only; see kernels/hostbuild.py). Each entry point
// walks the same grid the CUDA launch would, sequentially, and calls the same thread body from
// warp_math.cuh, so what the tests check on the CPU is the arithmetic the GPU runs.
#include "warp_math.cuh"

extern "C" {

int wc_job_size() { return (int)sizeof(WcJob); }

int wc_roi_size() { return (int)sizeof(WcRoi); }

int wc_tile() { return WC_TILE; }

// Mirrors wc_composite: grid (ntiles), block (WC_TILE, WC_TILE).
void wc_host_composite(const unsigned char* src, unsigned char* dst, int H, int W,
                       const WcJob* jobs, int njobs, const float* fields, const int* tiles,
                       int ntiles) {
    for (int t = 0; t < ntiles; ++t)
        for (int ty = 0; ty < WC_TILE; ++ty)
            for (int tx = 0; tx < WC_TILE; ++tx)
                wc_composite_thread(src, dst, H, W, jobs, njobs, fields, tiles, t, tx, ty);
}

// Mirrors wc_crop_rois_f32 / _f16: grid (ceil(max h*w / WC_CROP_THREADS), nrois).
void wc_host_crop_rois(const unsigned char* src, int H, int W, const WcRoi* rois, int nrois,
                       void* out, int fp16) {
    int most = 0;
    for (int r = 0; r < nrois; ++r)
        if (rois[r].h * rois[r].w > most) most = rois[r].h * rois[r].w;
    const int blocks = (most + WC_CROP_THREADS - 1) / WC_CROP_THREADS;
    for (int r = 0; r < nrois; ++r)
        for (int b = 0; b < blocks; ++b)
            for (int t = 0; t < WC_CROP_THREADS; ++t) {
                const int p = b * WC_CROP_THREADS + t;
                if (fp16)
                    wc_crop_thread(src, H, W, rois, r, p, WcStoreF16{(unsigned short*)out});
                else
                    wc_crop_thread(src, H, W, rois, r, p, WcStoreF32{(float*)out});
            }
}

void wc_host_float_to_half(const float* in, unsigned short* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = wc_float_to_half_bits(in[i]);
}

}  // extern "C"
