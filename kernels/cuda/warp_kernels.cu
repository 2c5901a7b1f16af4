// warpcam fused kernels, compiled at run time with NVRTC (cupy.RawModule, kernels/cuda_backend.py)
// and, by the tests, for every supported architecture (tests/test_kernels_nvrtc.py).
// The per-pixel work lives in warp_math.cuh; these entry points only map threads to pixels.
// Launch shapes (kernels/cuda_backend.py):
//   wc_composite      grid (ntiles), block (WC_TILE, WC_TILE)
//   wc_crop_rois_f32  grid (ceil(max h*w / WC_CROP_THREADS), nrois), block (WC_CROP_THREADS)
//   wc_crop_rois_f16  same, fp16 output stored as IEEE binary16 bits
#include "warp_math.cuh"

// Apply every job of a frame, in place on dst (a copy of src), over the listed tiles.
extern "C" __global__ void __launch_bounds__(WC_TILE * WC_TILE)
wc_composite(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst, int H, int W,
             const WcJob* __restrict__ jobs, int njobs, const float* __restrict__ fields,
             const int* __restrict__ tiles, int ntiles) {
    if ((int)blockIdx.x >= ntiles) return;
    wc_composite_thread(src, dst, H, W, jobs, njobs, fields, tiles, (int)blockIdx.x,
                        (int)threadIdx.x, (int)threadIdx.y);
}

// Crop, normalise and batch every ROI of a frame into NCHW float32.
extern "C" __global__ void __launch_bounds__(WC_CROP_THREADS)
wc_crop_rois_f32(const unsigned char* __restrict__ src, int H, int W,
                 const WcRoi* __restrict__ rois, int nrois, float* __restrict__ out) {
    if ((int)blockIdx.y >= nrois) return;
    const int p = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    wc_crop_thread(src, H, W, rois, (int)blockIdx.y, p, WcStoreF32{out});
}

// The same into NCHW float16 (written as binary16 bits).
extern "C" __global__ void __launch_bounds__(WC_CROP_THREADS)
wc_crop_rois_f16(const unsigned char* __restrict__ src, int H, int W,
                 const WcRoi* __restrict__ rois, int nrois, unsigned short* __restrict__ out) {
    if ((int)blockIdx.y >= nrois) return;
    const int p = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    wc_crop_thread(src, H, W, rois, (int)blockIdx.y, p, WcStoreF16{out});
}
