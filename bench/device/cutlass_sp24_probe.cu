// Probe: is CUTLASS's Hopper sparse GEMM (wgmma.sp) faster than cuSPARSELt at prefill sizes?
//
// One configuration per build (-DTM -DTN -DTK tile, -DCM -DCN cluster, -DSCHED 0 cooperative / 1 ping-pong), so that
// several configurations compile in parallel.  Computes y[tok, out] = x[tok, K] . W[out, K]^T in fp16 with fp32
// accumulation, W 2:4 sparse (two of every four along K kept, random positions, random non-zero values):
//   GEMM M = out (the sparse operand A = W, row-major), GEMM N = tokens (B = x, column-major K x N = x row-major),
//   D column-major M x N = y row-major [tok, out].
// Checks 512 random outputs against float64 dot products on the host (relative Frobenius error over the sample) and
// times the GEMM with CUDA events (median of batches).  Prints one line:
//   cutlass_sp24 cfg=<...> tok=<> out=<> k=<> us=<median> us_min=<> rel_err=<> smem_stages=<>
// Built on the device: see bench/device/cutlass_probe.sh.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/transform/device/transform_universal_adapter.hpp"
#include "cutlass/transform/kernel/sparse_gemm_compressor.hpp"
#include "cutlass/util/packed_stride.hpp"

using namespace cute;

#ifndef TM
#define TM 128
#endif
#ifndef TN
#define TN 128
#endif
#ifndef TK
#define TK 128
#endif
#ifndef CM
#define CM 1
#endif
#ifndef CN
#define CN 2
#endif
#ifndef SCHED
#define SCHED 0
#endif

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  std::printf("cuda error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); std::exit(1); } } while (0)
#define CS(x) do { cutlass::Status s_ = (x); if (s_ != cutlass::Status::kSuccess) { \
  std::printf("cutlass error %s at %s:%d\n", cutlassGetStatusString(s_), __FILE__, __LINE__); std::exit(1); } } while (0)

using Elem = cutlass::half_t;
using Acc = float;
using LayoutA = cutlass::layout::RowMajor;
using LayoutB = cutlass::layout::ColumnMajor;
using LayoutD = cutlass::layout::ColumnMajor;
constexpr int kAlign = 8;
using ProbeTile = Shape<Int<TM>, Int<TN>, Int<TK>>;
using ProbeCluster = Shape<Int<CM>, Int<CN>, _1>;
using ProbeSched = std::conditional_t<SCHED == 0, cutlass::gemm::KernelTmaWarpSpecializedCooperative,
                                 cutlass::gemm::KernelTmaWarpSpecializedPingpong>;
using EpiSched = std::conditional_t<SCHED == 0, cutlass::epilogue::TmaWarpSpecializedCooperative,
                                    cutlass::epilogue::TmaWarpSpecialized>;
using Problem = Shape<int, int, int, int>;

using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassSparseTensorOp, ProbeTile, ProbeCluster,
    cutlass::epilogue::collective::EpilogueTileAuto, Acc, Acc,
    Elem, LayoutD, kAlign, Elem, LayoutD, kAlign, EpiSched>::CollectiveOp;
using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassSparseTensorOp,
    Elem, LayoutA, kAlign, Elem, LayoutB, kAlign, Acc, ProbeTile, ProbeCluster,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
    ProbeSched>::CollectiveOp;
using Kernel = cutlass::gemm::kernel::GemmUniversal<Problem, Mainloop, Epilogue>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

using StrideA = cutlass::gemm::TagToStrideA_t<LayoutA>;
using SparseCfg = typename Mainloop::SparseConfig;
using ElemE = typename Mainloop::ElementE;
using CompUtil = cutlass::transform::kernel::StructuredSparseCompressorUtility<Problem, Elem, LayoutA, SparseCfg>;
using CompKernel = cutlass::transform::kernel::StructuredSparseCompressor<Problem, Elem, LayoutA, SparseCfg,
                                                                           cutlass::arch::Sm90>;
using Compressor = cutlass::transform::device::TransformUniversalAdapter<CompKernel>;

int main(int argc, char** argv) {
  int tok = argc > 1 ? std::atoi(argv[1]) : 4096;
  int out = argc > 2 ? std::atoi(argv[2]) : 4096;
  int k = argc > 3 ? std::atoi(argv[3]) : 4096;
  int iters = argc > 4 ? std::atoi(argv[4]) : 50;
  int batches = argc > 5 ? std::atoi(argv[5]) : 9;
  int M = out, N = tok, K = k;
  Problem problem{M, N, K, 1};

  // W dense-with-zeros, 2:4 along K, kept values uniform in +-[0.25, 1]; x uniform in [-1, 1].
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<Elem> w(size_t(M) * K), x(size_t(N) * K);
  for (int r = 0; r < M; ++r)
    for (int g = 0; g < K / 4; ++g) {
      int a = rng() % 4, b = rng() % 3;
      if (b >= a) ++b;
      for (int j = 0; j < 4; ++j) {
        float v = 0.f;
        if (j == a || j == b) { v = u(rng); v = v < 0 ? v - 0.25f : v + 0.25f; v *= 0.8f; }
        w[size_t(r) * K + 4 * g + j] = Elem(v);
      }
    }
  for (auto& v : x) v = Elem(u(rng));

  StrideA sA = cutlass::make_cute_packed_stride(StrideA{}, make_shape(M, K, 1));
  CompUtil util(problem, sA);
  int ME = util.get_metadata_m_physical(), KE = util.get_metadata_k_physical(), KC = util.get_tensorA_k_physical();
  Elem *dW, *dWc, *dX, *dY;
  ElemE* dE;
  CK(cudaMalloc(&dW, sizeof(Elem) * w.size()));
  CK(cudaMalloc(&dWc, sizeof(Elem) * size_t(M) * KC));
  CK(cudaMalloc(&dE, sizeof(ElemE) * size_t(ME) * KE));
  CK(cudaMalloc(&dX, sizeof(Elem) * x.size()));
  CK(cudaMalloc(&dY, sizeof(Elem) * size_t(M) * N));
  CK(cudaMemcpy(dW, w.data(), sizeof(Elem) * w.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dX, x.data(), sizeof(Elem) * x.size(), cudaMemcpyHostToDevice));
  CK(cudaMemset(dY, 0xff, sizeof(Elem) * size_t(M) * N));  // poisoned (NaN)

  cutlass::KernelHardwareInfo hw;
  hw.device_id = 0;
  hw.sm_count = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(0);
  typename Compressor::Arguments cargs{problem, {dW, sA, dWc, dE}, {hw}};
  Compressor comp;
  void* cws = nullptr;
  size_t cwn = Compressor::get_workspace_size(cargs);
  if (cwn) CK(cudaMalloc(&cws, cwn));
  CS(comp.can_implement(cargs));
  CS(comp.initialize(cargs, cws));
  CS(comp.run());
  CK(cudaDeviceSynchronize());

  auto layoutA = SparseCfg::fill_layoutA(problem);
  auto layoutE = SparseCfg::fill_layoutE(problem);
  auto sB = cutlass::make_cute_packed_stride(typename Gemm::GemmKernel::StrideB{}, make_shape(N, K, 1));
  auto sD = cutlass::make_cute_packed_stride(typename Gemm::GemmKernel::StrideD{}, make_shape(M, N, 1));
  typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm, problem,
                                {dWc, layoutA, dX, sB, dE, layoutE},
                                {{1.f, 0.f}, dY, sD, dY, sD}, hw};
  Gemm gemm;
  void* ws = nullptr;
  size_t wn = Gemm::get_workspace_size(args);
  if (wn) CK(cudaMalloc(&ws, wn));
  CS(gemm.can_implement(args));
  CS(gemm.initialize(args, ws));
  CS(gemm.run());
  CK(cudaDeviceSynchronize());

  std::vector<Elem> y(size_t(M) * N);
  CK(cudaMemcpy(y.data(), dY, sizeof(Elem) * y.size(), cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  for (int s = 0; s < 512; ++s) {
    int i = rng() % N, j = rng() % M;  // token i, output j; y column-major M x N: y[j + i * M]
    double ref = 0;
    for (int t = 0; t < K; ++t) ref += double(float(x[size_t(i) * K + t])) * double(float(w[size_t(j) * K + t]));
    double got = double(float(y[size_t(j) + size_t(i) * M]));
    num += (got - ref) * (got - ref);
    den += ref * ref;
  }
  double rel = std::sqrt(num / den);

  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 20; ++i) CS(gemm.run());
  std::vector<float> t;
  for (int b = 0; b < batches; ++b) {
    CK(cudaEventRecord(e0));
    for (int i = 0; i < iters; ++i) gemm.run();
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms * 1000.f / iters);
  }
  CK(cudaGetLastError());
  std::sort(t.begin(), t.end());
  std::printf("cutlass_sp24 cfg=%dx%dx%d_c%dx%d_%s tok=%d out=%d k=%d us=%.2f us_min=%.2f rel_err=%.3e stages=%d\n",
              TM, TN, TK, CM, CN, SCHED == 0 ? "coop" : "pingpong", tok, out, k, t[t.size() / 2], t[0], rel,
              int(Mainloop::DispatchPolicy::Stages));
  return 0;
}
