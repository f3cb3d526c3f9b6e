// 2:4 sparse x dense GEMM on Hopper's sparse tensor cores (wgmma.sp) through CUTLASS 3.x/4.x collectives, as a
// plain C ABI for ctypes (llmsparse/kernels/cutlass_sp24.py builds and loads it; no PyTorch headers needed).
//
//   y[tok, out] = x[tok, K] . W[out, K]^T
//
// GEMM M = out (W is the sparse operand A, K-major), GEMM N = tok (B = x, K-major: x row-major [tok, K]),
// D column-major M x N, i.e. y row-major [tok, out]. fp32 accumulation, fp16 or bf16 in and out.
//
// W is held in CUTLASS's own compressed form: the kept values A_c and the reordered metadata E, both written by
// CUTLASS's compressor kernel from the dense-with-zeros weight (llms_sp24_compress_*). The E layout depends on the
// element type and on the tile's K extent (min(TK, 128)); every configuration below uses TK = 64, so one compressed
// form serves all configurations of a dtype (static_assert below).
//
// One translation unit per (dtype, configuration), chosen by -DLLMS_DTYPE=0|1 (fp16|bf16) and -DLLMS_CFG=0..4, so
// the builder compiles them in parallel; the compressor lives in the LLMS_CFG == 0 unit. Needs nvcc >= 12.3 and
// -gencode=arch=compute_90a,code=sm_90a, and -DNDEBUG (without it ptxas serializes the wgmma pipeline, its C7510).
//
// Return codes: 0 ok, 1 problem not supported (can_implement), 2 initialize failed, 3 launch failed.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

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

#if !defined(LLMS_DTYPE) || !defined(LLMS_CFG)
#error "build with -DLLMS_DTYPE=0|1 -DLLMS_CFG=0..4"
#endif

namespace llms {
namespace {  // internal linkage: every translation unit defines these (the library links them side by side)
using namespace cute;

#if LLMS_DTYPE == 0
using Elem = cutlass::half_t;
#define LLMS_DT f16
#else
using Elem = cutlass::bfloat16_t;
#define LLMS_DT bf16
#endif

// Configurations: tile (out x tok x K), cluster (out x tok). The first two won 5 of the 6 Llama-2 shapes at
// M = 4096 fp16 on an H100 (bench/results/cutlass_sp24_probe_m4096_h100_s23.txt); the next two are their
// cluster variants, not yet measured; the last has 128-token tiles of 128 outputs, for M = 128-1024, where the
// larger tiles leave SMs idle (at M = 256 on 4096 outputs a 256x128 tile gives 32 tiles for 132 SMs).
#if LLMS_CFG == 0
constexpr int kTM = 256, kTN = 128, kCM = 1, kCN = 1;
#elif LLMS_CFG == 1
constexpr int kTM = 128, kTN = 256, kCM = 1, kCN = 2;
#elif LLMS_CFG == 2
constexpr int kTM = 256, kTN = 128, kCM = 2, kCN = 1;
#elif LLMS_CFG == 3
constexpr int kTM = 128, kTN = 256, kCM = 1, kCN = 1;
#elif LLMS_CFG == 4
constexpr int kTM = 128, kTN = 128, kCM = 1, kCN = 1;
#else
#error "LLMS_CFG must be 0..4"
#endif
constexpr int kTK = 64;
static_assert(kTK == 64, "the compressed form (E layout) is shared by all configurations only for TK = 64");

using Acc = float;
using LayoutA = cutlass::layout::RowMajor;     // W [out, K]
using LayoutB = cutlass::layout::ColumnMajor;  // x [tok, K] seen as K x tok
using LayoutD = cutlass::layout::ColumnMajor;  // y [tok, out] seen as out x tok
constexpr int kAlign = 8;
using TileShape = Shape<Int<kTM>, Int<kTN>, Int<kTK>>;
using ClusterShape = Shape<Int<kCM>, Int<kCN>, _1>;
using Problem = Shape<int, int, int, int>;

using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassSparseTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, Acc, Acc, Elem, LayoutD, kAlign, Elem, LayoutD, kAlign,
    cutlass::epilogue::TmaWarpSpecializedCooperative>::CollectiveOp;
using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassSparseTensorOp, Elem, LayoutA, kAlign, Elem, LayoutB, kAlign, Acc,
    TileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
    cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;
using Kernel = cutlass::gemm::kernel::GemmUniversal<Problem, Mainloop, Epilogue>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
using SparseCfg = typename Mainloop::SparseConfig;
using ElemE = typename Mainloop::ElementE;
using StrideA = cutlass::gemm::TagToStrideA_t<LayoutA>;

int sm_count() {
  static int count[64] = {0};
  int dev = 0;
  cudaGetDevice(&dev);
  if (dev < 0 || dev >= 64) return cutlass::KernelHardwareInfo::query_device_multiprocessor_count(dev);
  if (!count[dev]) count[dev] = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(dev);
  return count[dev];
}

typename Gemm::Arguments gemm_args(const void* a_c, const void* e, const void* x, void* y, int M, int N, int K) {
  Problem problem{M, N, K, 1};
  cutlass::KernelHardwareInfo hw;
  cudaGetDevice(&hw.device_id);
  hw.sm_count = sm_count();
  auto sB = cutlass::make_cute_packed_stride(typename Gemm::GemmKernel::StrideB{}, make_shape(N, K, 1));
  auto sD = cutlass::make_cute_packed_stride(typename Gemm::GemmKernel::StrideD{}, make_shape(M, N, 1));
  // beta = 0: the epilogue does not read C (y, not yet written)
  return typename Gemm::Arguments{
      cutlass::gemm::GemmUniversalMode::kGemm, problem,
      {static_cast<const Elem*>(a_c), SparseCfg::fill_layoutA(problem), static_cast<const Elem*>(x), sB,
       static_cast<const ElemE*>(e), SparseCfg::fill_layoutE(problem)},
      {{1.f, 0.f}, static_cast<const Elem*>(y), sD, static_cast<Elem*>(y), sD},
      hw};
}

#if LLMS_CFG == 0
using CompUtil = cutlass::transform::kernel::StructuredSparseCompressorUtility<Problem, Elem, LayoutA, SparseCfg>;
using CompKernel = cutlass::transform::kernel::StructuredSparseCompressor<Problem, Elem, LayoutA, SparseCfg,
                                                                           cutlass::arch::Sm90>;
using Compressor = cutlass::transform::device::TransformUniversalAdapter<CompKernel>;

typename Compressor::Arguments comp_args(const void* dense, void* a_c, void* e, int M, int K) {
  Problem problem{M, 1, K, 1};
  StrideA sA = cutlass::make_cute_packed_stride(StrideA{}, make_shape(M, K, 1));
  cutlass::KernelHardwareInfo hw;
  cudaGetDevice(&hw.device_id);
  hw.sm_count = sm_count();
  return typename Compressor::Arguments{
      problem, {static_cast<const Elem*>(dense), sA, static_cast<Elem*>(a_c), static_cast<ElemE*>(e)}, {hw}};
}
#endif
}  // namespace
}  // namespace llms

#define LLMS_CAT2(a, b, c) a##_##b##_##c
#define LLMS_CAT(a, b, c) LLMS_CAT2(a, b, c)
#define LLMS_FN(name) LLMS_CAT(name, LLMS_DT, LLMS_CFG)
#define LLMS_CAT2D(a, b) a##_##b
#define LLMS_CATD(a, b) LLMS_CAT2D(a, b)
#define LLMS_FND(name) LLMS_CATD(name, LLMS_DT)

extern "C" {

// "TMxTNxTK_cCMxCN": checked by the loader against its own table.
const char* LLMS_FN(llms_sp24_cfg_name)() {
  static char name[64];
  snprintf(name, sizeof(name), "%dx%dx%d_c%dx%d", llms::kTM, llms::kTN, llms::kTK, llms::kCM, llms::kCN);
  return name;
}

int64_t LLMS_FN(llms_sp24_gemm_workspace)(int M, int N, int K) {
  return static_cast<int64_t>(llms::Gemm::get_workspace_size(llms::gemm_args(nullptr, nullptr, nullptr, nullptr, M, N, K)));
}

// y[N, M] (row-major) = x[N, K] . W[M, K]^T with W as (a_c, e) from llms_sp24_compress; ws: workspace bytes as
// llms_sp24_gemm_workspace says (may be null when that is 0); stream: a cudaStream_t (CUstream) or null.
int LLMS_FN(llms_sp24_gemm)(const void* a_c, const void* e, const void* x, void* y, int M, int N, int K, void* ws,
                            void* stream) {
  auto args = llms::gemm_args(a_c, e, x, y, M, N, K);
  llms::Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) return 1;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (gemm.initialize(args, ws, st) != cutlass::Status::kSuccess) return 2;
  if (gemm.run(st) != cutlass::Status::kSuccess) return 3;
  return 0;
}

#if LLMS_CFG == 0
// Sizes of the compressed form of an M x K weight: A_c elements and E bytes (E may be padded past M and K/2).
int LLMS_FND(llms_sp24_form_sizes)(int M, int K, int64_t* ac_elems, int64_t* e_bytes) {
  llms::Problem problem{M, 1, K, 1};
  llms::StrideA sA = cutlass::make_cute_packed_stride(llms::StrideA{}, cute::make_shape(M, K, 1));
  llms::CompUtil util(problem, sA);
  *ac_elems = int64_t(M) * util.get_tensorA_k_physical();
  *e_bytes = int64_t(util.get_metadata_m_physical()) * util.get_metadata_k_physical() * int64_t(sizeof(llms::ElemE));
  return 0;
}

int64_t LLMS_FND(llms_sp24_compress_workspace)(int M, int K) {
  return static_cast<int64_t>(llms::Compressor::get_workspace_size(llms::comp_args(nullptr, nullptr, nullptr, M, K)));
}

// (a_c, e) from the dense-with-zeros weight dense[M, K] (row-major; at most 2 non-zeros in each group of 4).
int LLMS_FND(llms_sp24_compress)(const void* dense, void* a_c, void* e, int M, int K, void* ws, void* stream) {
  auto args = llms::comp_args(dense, a_c, e, M, K);
  llms::Compressor comp;
  if (comp.can_implement(args) != cutlass::Status::kSuccess) return 1;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (comp.initialize(args, ws, st) != cutlass::Status::kSuccess) return 2;
  if (comp.run(st) != cutlass::Status::kSuccess) return 3;
  return 0;
}
#endif
}
