#include "nn/cuda/qm9_cuda_network.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/core/status_macros.h"
#include "kernels/cuda/cuda_backend.h"
#include "nn/activation.h"
#include "nn/cuda/cublas_library.h"
#include "nn/cuda/nn_kernels.h"
#include "nn/qm9_structure.h"
#include "nn/radial.h"
#include "nn/spherical_harmonics.h"

namespace tpserve::nn {
namespace {

absl::Status CudaCheck(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("Qm9CudaNetwork: ", what, ": ", cudaGetErrorString(error)));
}
absl::Status CublasCheck(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("Qm9CudaNetwork: ", what, ": cuBLAS status ", static_cast<int>(status)));
}

// Device memory of `count` elements of T (nullptr for 0); freed on destruction.
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  ~DeviceArray() { Reset(); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& other) noexcept { *this = std::move(other); }
  DeviceArray& operator=(DeviceArray&& other) noexcept {
    if (this != &other) {
      Reset();
      std::swap(data_, other.data_);
      std::swap(size_, other.size_);
      std::swap(capacity_, other.capacity_);
    }
    return *this;
  }
  absl::Status Resize(int64_t count) {
    if (count <= capacity_) {
      size_ = count;
      return absl::OkStatus();
    }
    Reset();
    void* data = nullptr;
    RETURN_IF_ERROR(CudaCheck(cudaMalloc(&data, sizeof(T) * static_cast<size_t>(count)), "cudaMalloc"));
    data_ = static_cast<T*>(data);
    size_ = capacity_ = count;
    return absl::OkStatus();
  }
  void Reset() {
    if (data_) cudaFree(data_);
    data_ = nullptr;
    size_ = capacity_ = 0;
  }
  T* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  T* data_ = nullptr;
  int64_t size_ = 0, capacity_ = 0;
};

ConstTensorView In(const float* data, std::vector<int64_t> shape) { return {data, DType::kFloat32, std::move(shape)}; }
TensorView Out(float* data, std::vector<int64_t> shape) { return {data, DType::kFloat32, std::move(shape)}; }

const float kCosPi8 = static_cast<float>(std::cos(M_PI / 8));
const float kSinPi8 = static_cast<float>(std::sin(M_PI / 8));

}  // namespace

// One path of an FCTP with one-hot attributes, as a per-species linear map (species_fctp.h):
// out[n, out block][w][m] += scale * sum_u W[u, s(n), w] x[n, in block][u][m].
struct SpeciesPath {
  int64_t in_offset = 0, out_offset = 0, weight_offset = 0;  // weight_offset: relative to the FCTP's block
  int mul_in = 0, mul_out = 0, dim = 0;
  float scale = 0;
};

// The paths of a dense FCTP(x, num_elements x 0e -> out) plan; INTERNAL when a path is not the
// l x 0 -> l 'uvw' path with a diagonal, constant 3j block this assumes.
absl::StatusOr<std::vector<SpeciesPath>> SpeciesPaths(const TensorProductPlan& plan, double attr_value) {
  std::vector<SpeciesPath> paths;
  for (const PathPlan& p : plan.paths()) {
    const int dim = p.dim_in1();
    bool ok = p.mode == ConnectionMode::kUvw && p.l2 == 0 && p.l1 == p.l3 && p.i_in2 == 0 &&
              static_cast<int>(p.cg.size()) == dim * dim;
    const double c = ok ? p.cg[0] : 0;
    for (int m1 = 0; ok && m1 < dim; ++m1) {
      for (int m3 = 0; m3 < dim; ++m3) {
        const double expected = m1 == m3 ? c : 0.0;
        if (std::abs(p.cg[m1 * dim + m3] - expected) > 1e-12 * std::abs(c)) ok = false;
      }
    }
    if (!ok) return absl::InternalError("Qm9CudaNetwork: an FCTP path is not a per-species linear map");
    paths.push_back({p.offset_in1, p.offset_out, p.weight_offset, p.mul_in1, p.mul_out, dim,
                     static_cast<float>(p.path_weight * attr_value * c)});
  }
  return paths;
}

// One convolution (+ the gate after it) on the device.
struct DeviceLayer {
  std::unique_ptr<PreparedPlan> sc, lin1, lin2, tp;
  std::vector<SpeciesPath> sc_paths, lin1_paths, lin2_paths;
  int64_t dim_in = 0, dim_out = 0, dim_mid = 0, weight_numel = 0;
  int64_t sc_offset = -1, lin1_offset = -1, lin2_offset = -1;  // absolute offsets in params, -1: absent
  std::vector<int64_t> radial_offsets;                          // one per MLP matrix
  std::vector<int> mlp_sizes;
  // gate after this layer (none for the last)
  bool has_gate = false;
  DeviceArray<cuda::GateEntry> gate_entries;
  int num_gate_entries = 0;
  int64_t gate_dim_out = 0;
  // activations of the current batch
  DeviceArray<float> output, h_src, edge_weights, agg, next_input;
  std::vector<DeviceArray<float>> mlp_pre, mlp_post;  // per hidden layer, [num_edges, width]
};

struct Qm9CudaNetwork::State {
  Qm9NetworkConfig config;
  Qm9CudaOptions options;
  bool per_species_fctp = false;  // options.fctp resolved for this config
  std::shared_ptr<Qm9NetworkStructure> structure;  // irreps and plans (unprepared)
  std::unique_ptr<Backend> backend;
  cudaStream_t stream = nullptr;
  const CublasLibrary* blas = nullptr;  // cuBLAS, loaded on first use (cublas_library.h)
  cublasHandle_t cublas = nullptr;
  std::vector<std::unique_ptr<DeviceLayer>> layers;
  float gelu_scale = 1.f;
  // parameters
  DeviceArray<float> params, velocity, grad;
  // the batch
  int64_t num_nodes = 0, num_edges = 0, num_graphs = 0;
  bool has_targets = false;
  DeviceArray<int32_t> src, dst, graph;
  DeviceArray<float> attr, sh, basis, targets, predictions, grad_predictions, loss;
  // node ids grouped by species, each species padded to species_rows rows with -1: species s is
  // species_order[s * species_rows, (s + 1) * species_rows), so one strided-batched GEMM (batch =
  // species) does a path for all species
  DeviceArray<int32_t> species_order;
  int64_t species_rows = 0;
  DeviceArray<float> permuted_x, permuted_g, permuted_out;  // per-species FCTP scratch
  // scratch, sized to the largest layer
  DeviceArray<float> h, sc_out, lin2_out, messages, grad_y[2], grad_x, grad_x_sc, grad_agg, grad_messages,
      grad_edge_weights, grad_h_src, grad_h, mlp_grad[2];

  ExecutionContext ctx() const { return {options.precision, stream}; }

  ~State() {
    layers.clear();
    if (cublas) blas->destroy(cublas);
    if (stream && backend) backend->DestroyStream(stream);
  }

  // Row-major C[M, N] = alpha op(A) op(B) + beta C, op(A) [M, K], op(B) [K, N].
  absl::Status Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                    const float* b, float beta, float* c) {
    if (m == 0 || n == 0) return absl::OkStatus();
    return CublasCheck(blas->sgemm(cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b,
                                   static_cast<int>(trans_b ? k : n), a, static_cast<int>(trans_a ? m : k), &beta,
                                   c, static_cast<int>(n)),
                       "cublasSgemm");
  }

  // Row-major with leading dimensions (row strides).
  absl::Status GemmLd(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                      int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
    if (m == 0 || n == 0) return absl::OkStatus();
    return CublasCheck(blas->sgemm(cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b,
                                   static_cast<int>(ldb), a, static_cast<int>(lda), &beta, c, static_cast<int>(ldc)),
                       "cublasSgemm");
  }

  // Row-major, strided batched over `batch` (strides in elements).
  absl::Status GemmBatched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                           int64_t lda, int64_t stride_a, const float* b, int64_t ldb, int64_t stride_b, float beta,
                           float* c, int64_t ldc, int64_t stride_c, int batch) {
    if (m == 0 || n == 0 || batch == 0) return absl::OkStatus();
    return CublasCheck(blas->sgemm_strided_batched(cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                 trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n),
                                                 static_cast<int>(m), static_cast<int>(k), &alpha, b,
                                                 static_cast<int>(ldb), stride_b, a, static_cast<int>(lda), stride_a,
                                                 &beta, c, static_cast<int>(ldc), stride_c, batch),
                       "cublasSgemmStridedBatched");
  }

  // out (+=) the per-species FCTP of x ([num_nodes, x_row]) into out ([num_nodes, out_row]).
  absl::Status SpeciesForward(const std::vector<SpeciesPath>& paths, int64_t offset, const float* x, int64_t x_row,
                              float* out, int64_t out_row) {
    const int64_t rows = species_rows * config.num_elements, r = species_rows;
    const int elements = config.num_elements;
    for (const SpeciesPath& p : paths) {
      cuda::PermuteBlock(x, x_row, p.in_offset, species_order.data(), rows, p.mul_in, p.dim, permuted_x.data(), stream);
      // per species s: [r * dim, mul_in] x W[:, s, :] ([mul_in, mul_out], row stride num_elements * mul_out)
      RETURN_IF_ERROR(GemmBatched(false, false, r * p.dim, p.mul_out, p.mul_in, p.scale, permuted_x.data(), p.mul_in,
                                  r * p.dim * p.mul_in, params.data() + offset + p.weight_offset,
                                  int64_t{elements} * p.mul_out, p.mul_out, 0.f, permuted_out.data(), p.mul_out,
                                  r * p.dim * p.mul_out, elements));
      cuda::UnpermuteAddBlock(permuted_out.data(), species_order.data(), rows, p.mul_out, p.dim, out, out_row,
                              p.out_offset, stream);
    }
    return CudaCheck(cudaGetLastError(), "per-species forward");
  }

  // grad[offset..] (=) and grad_x (+=, when not null) of the per-species FCTP.
  absl::Status SpeciesBackward(const std::vector<SpeciesPath>& paths, int64_t offset, int64_t weight_numel,
                               const float* x, int64_t x_row, const float* grad_out, int64_t out_row, float* grad_x) {
    const int64_t rows = species_rows * config.num_elements, r = species_rows;
    const int elements = config.num_elements;
    RETURN_IF_ERROR(CudaCheck(cudaMemsetAsync(grad.data() + offset, 0, sizeof(float) * weight_numel, stream), "memset"));
    for (const SpeciesPath& p : paths) {
      cuda::PermuteBlock(x, x_row, p.in_offset, species_order.data(), rows, p.mul_in, p.dim, permuted_x.data(), stream);
      cuda::PermuteBlock(grad_out, out_row, p.out_offset, species_order.data(), rows, p.mul_out, p.dim,
                         permuted_g.data(), stream);
      // dW[:, s, :] = scale xs^T gs (padding rows are zero in both)
      RETURN_IF_ERROR(GemmBatched(true, false, p.mul_in, p.mul_out, r * p.dim, p.scale, permuted_x.data(), p.mul_in,
                                  r * p.dim * p.mul_in, permuted_g.data(), p.mul_out, r * p.dim * p.mul_out, 0.f,
                                  grad.data() + offset + p.weight_offset, int64_t{elements} * p.mul_out, p.mul_out,
                                  elements));
      if (grad_x) {  // d x = scale gs W[:, s, :]^T
        RETURN_IF_ERROR(GemmBatched(false, true, r * p.dim, p.mul_in, p.mul_out, p.scale, permuted_g.data(),
                                    p.mul_out, r * p.dim * p.mul_out, params.data() + offset + p.weight_offset,
                                    int64_t{elements} * p.mul_out, p.mul_out, 0.f, permuted_out.data(), p.mul_in,
                                    r * p.dim * p.mul_in, elements));
        cuda::UnpermuteAddBlock(permuted_out.data(), species_order.data(), rows, p.mul_in, p.dim, grad_x, x_row,
                                p.in_offset, stream);
      }
    }
    return CudaCheck(cudaGetLastError(), "per-species backward");
  }

  // out (=) FCTP(x, attr); zeros when the product has no weights.
  absl::Status Fctp(const PreparedPlan& plan, const std::vector<SpeciesPath>& paths, int64_t offset, const float* x,
                    float* out) {
    const TensorProductPlan& p = plan.plan();
    RETURN_IF_ERROR(CudaCheck(cudaMemsetAsync(out, 0, sizeof(float) * num_nodes * p.dim_out(), stream), "memset"));
    if (p.weight_numel() == 0 || num_nodes == 0) return absl::OkStatus();
    if (per_species_fctp) return SpeciesForward(paths, offset, x, p.dim_in1(), out, p.dim_out());
    return backend->Forward(plan, In(params.data() + offset, {p.weight_numel()}), In(x, {num_nodes, p.dim_in1()}),
                            In(attr.data(), {num_nodes, p.dim_in2()}), Out(out, {num_nodes, p.dim_out()}), ctx());
  }
  // grad[offset..] (=) and grad_x (=, when not null) of the FCTP.
  absl::Status FctpBackward(const PreparedPlan& plan, const std::vector<SpeciesPath>& paths, int64_t offset,
                            const float* x, const float* grad_out, float* grad_x) {
    const TensorProductPlan& p = plan.plan();
    if (grad_x) {
      RETURN_IF_ERROR(
          CudaCheck(cudaMemsetAsync(grad_x, 0, sizeof(float) * num_nodes * p.dim_in1(), stream), "memset"));
    }
    if (p.weight_numel() == 0) return absl::OkStatus();
    if (num_nodes == 0) {
      return CudaCheck(cudaMemsetAsync(grad.data() + offset, 0, sizeof(float) * p.weight_numel(), stream), "memset");
    }
    if (per_species_fctp) {
      return SpeciesBackward(paths, offset, p.weight_numel(), x, p.dim_in1(), grad_out, p.dim_out(), grad_x);
    }
    RETURN_IF_ERROR(CudaCheck(cudaMemsetAsync(grad.data() + offset, 0, sizeof(float) * p.weight_numel(), stream),
                              "memset"));
    GradientOutputs grads;
    grads.grad_weight = Out(grad.data() + offset, {p.weight_numel()});
    if (grad_x) grads.grad_x1 = Out(grad_x, {num_nodes, p.dim_in1()});
    return backend->Backward(plan, In(params.data() + offset, {p.weight_numel()}), In(x, {num_nodes, p.dim_in1()}),
                             In(attr.data(), {num_nodes, p.dim_in2()}), In(grad_out, {num_nodes, p.dim_out()}),
                             grads, ctx());
  }

  const float* LayerInput(size_t l) const { return l == 0 ? attr.data() : layers[l - 1]->next_input.data(); }

  absl::Status ForwardLayer(size_t l) {
    DeviceLayer& L = *layers[l];
    const float* x = LayerInput(l);
    const int64_t n = num_nodes, e = num_edges;
    RETURN_IF_ERROR(Fctp(*L.sc, L.sc_paths, L.sc_offset, x, sc_out.data()));
    RETURN_IF_ERROR(Fctp(*L.lin1, L.lin1_paths, L.lin1_offset, x, h.data()));
    cuda::GatherRows(h.data(), src.data(), e, L.dim_in, 1.f, L.h_src.data(), stream);
    // radial MLP: basis [e, 10] -> ... -> edge_weights [e, weight_numel]
    const float* in = basis.data();
    const int matrices = static_cast<int>(L.mlp_sizes.size()) - 1;
    for (int k = 0; k < matrices; ++k) {
      const int fan_in = L.mlp_sizes[k], fan_out = L.mlp_sizes[k + 1];
      const bool last = k + 1 == matrices;
      float* z = last ? L.edge_weights.data() : L.mlp_pre[k].data();
      RETURN_IF_ERROR(Gemm(false, false, e, fan_out, fan_in, 1.f / std::sqrt(static_cast<float>(fan_in)), in,
                           params.data() + L.radial_offsets[k], 0.f, z));
      if (!last) {
        cuda::GeluForward(e * fan_out, gelu_scale, z, L.mlp_post[k].data(), stream);
        in = L.mlp_post[k].data();
      }
    }
    RETURN_IF_ERROR(CudaCheck(cudaMemsetAsync(L.agg.data(), 0, sizeof(float) * n * L.dim_mid, stream), "memset"));
    if (e > 0) {
      RETURN_IF_ERROR(backend->Forward(*L.tp, In(L.edge_weights.data(), {e, L.weight_numel}),
                                       In(L.h_src.data(), {e, L.dim_in}),
                                       In(sh.data(), {e, SphericalHarmonicsDim(config.lmax)}),
                                       Out(messages.data(), {e, L.dim_mid}), ctx()));
      cuda::ScatterAddRows(messages.data(), dst.data(), e, L.dim_mid,
                           1.f / std::sqrt(static_cast<float>(config.num_neighbors)), L.agg.data(), stream);
    }
    RETURN_IF_ERROR(Fctp(*L.lin2, L.lin2_paths, L.lin2_offset, L.agg.data(), lin2_out.data()));
    cuda::Axpby(n * L.dim_out, kCosPi8, sc_out.data(), kSinPi8, lin2_out.data(), L.output.data(), stream);
    if (L.has_gate) {
      cuda::GateForward(L.gate_entries.data(), L.num_gate_entries, L.output.data(), n, L.dim_out, L.gate_dim_out,
                        L.next_input.data(), stream);
    }
    return CudaCheck(cudaGetLastError(), "forward kernels");
  }

  // grad_y: d loss / d output of conv l; writes d loss / d input of conv l into grad_x (l > 0).
  absl::Status BackwardLayer(size_t l, const float* grad_y) {
    DeviceLayer& L = *layers[l];
    const float* x = LayerInput(l);
    const int64_t n = num_nodes, e = num_edges;
    const bool want_x = l > 0;
    // grad of sc and lin2 outputs: cos / sin times grad_y (h and lin2_out reused as scratch)
    cuda::Axpby(n * L.dim_out, kCosPi8, grad_y, 0.f, grad_y, sc_out.data(), stream);
    cuda::Axpby(n * L.dim_out, kSinPi8, grad_y, 0.f, grad_y, lin2_out.data(), stream);
    RETURN_IF_ERROR(FctpBackward(*L.sc, L.sc_paths, L.sc_offset, x, sc_out.data(), want_x ? grad_x_sc.data() : nullptr));
    RETURN_IF_ERROR(FctpBackward(*L.lin2, L.lin2_paths, L.lin2_offset, L.agg.data(), lin2_out.data(), grad_agg.data()));
    RETURN_IF_ERROR(CudaCheck(cudaMemsetAsync(grad_h.data(), 0, sizeof(float) * n * L.dim_in, stream), "memset"));
    const int matrices = static_cast<int>(L.mlp_sizes.size()) - 1;
    if (e > 0) {
      cuda::GatherRows(grad_agg.data(), dst.data(), e, L.dim_mid,
                       1.f / std::sqrt(static_cast<float>(config.num_neighbors)), grad_messages.data(), stream);
      // zeroed in case a kernel accumulates (cheap next to the products)
      RETURN_IF_ERROR(CudaCheck(
          cudaMemsetAsync(grad_edge_weights.data(), 0, sizeof(float) * e * L.weight_numel, stream), "memset"));
      RETURN_IF_ERROR(CudaCheck(cudaMemsetAsync(grad_h_src.data(), 0, sizeof(float) * e * L.dim_in, stream), "memset"));
      GradientOutputs grads;
      grads.grad_weight = Out(grad_edge_weights.data(), {e, L.weight_numel});
      grads.grad_x1 = Out(grad_h_src.data(), {e, L.dim_in});
      RETURN_IF_ERROR(backend->Backward(*L.tp, In(L.edge_weights.data(), {e, L.weight_numel}),
                                        In(L.h_src.data(), {e, L.dim_in}),
                                        In(sh.data(), {e, SphericalHarmonicsDim(config.lmax)}),
                                        In(grad_messages.data(), {e, L.dim_mid}), grads, ctx()));
      cuda::ScatterAddRows(grad_h_src.data(), src.data(), e, L.dim_in, 1.f, grad_h.data(), stream);
    }
    // radial MLP backward: g = d loss / d (matrix k's output)
    const float* g = grad_edge_weights.data();
    for (int k = matrices - 1; k >= 0; --k) {
      const int fan_in = L.mlp_sizes[k], fan_out = L.mlp_sizes[k + 1];
      const float scale = 1.f / std::sqrt(static_cast<float>(fan_in));
      const float* in = k == 0 ? basis.data() : L.mlp_post[k - 1].data();
      if (e == 0) {
        RETURN_IF_ERROR(CudaCheck(cudaMemsetAsync(grad.data() + L.radial_offsets[k], 0,
                                                  sizeof(float) * fan_in * fan_out, stream),
                                  "memset"));
        continue;
      }
      RETURN_IF_ERROR(Gemm(true, false, fan_in, fan_out, e, scale, in, g, 0.f, grad.data() + L.radial_offsets[k]));
      if (k > 0) {
        // d loss / d (hidden k-1's activation), then through the gelu in place; never the buffer g is in
        float* grad_a = g == mlp_grad[0].data() ? mlp_grad[1].data() : mlp_grad[0].data();
        RETURN_IF_ERROR(Gemm(false, true, e, fan_in, fan_out, scale, g, params.data() + L.radial_offsets[k], 0.f,
                             grad_a));
        cuda::GeluBackward(e * fan_in, gelu_scale, L.mlp_pre[k - 1].data(), grad_a, grad_a, stream);
        g = grad_a;
      }
    }
    RETURN_IF_ERROR(FctpBackward(*L.lin1, L.lin1_paths, L.lin1_offset, x, grad_h.data(), want_x ? grad_x.data() : nullptr));
    if (want_x) cuda::Axpby(n * L.dim_in, 1.f, grad_x.data(), 1.f, grad_x_sc.data(), grad_x.data(), stream);
    return CudaCheck(cudaGetLastError(), "backward kernels");
  }
};

Qm9CudaNetwork::Qm9CudaNetwork(std::unique_ptr<State> state) : state_(std::move(state)) {}
Qm9CudaNetwork::~Qm9CudaNetwork() = default;

const Qm9NetworkConfig& Qm9CudaNetwork::config() const { return state_->config; }
int64_t Qm9CudaNetwork::num_parameters() const { return state_->structure->num_parameters; }
void* Qm9CudaNetwork::stream() const { return state_->stream; }

absl::StatusOr<std::unique_ptr<Qm9CudaNetwork>> Qm9CudaNetwork::Create(const Qm9NetworkConfig& config,
                                                                       const Qm9CudaOptions& options) {
  RETURN_IF_ERROR(config.Validate());
  auto state = std::make_unique<State>();
  state->config = config;
  state->options = options;
  state->per_species_fctp = options.fctp != Qm9CudaOptions::FctpMode::kDense;
  ASSIGN_OR_RETURN(state->backend, CudaBackend::Create(options.device));
  ASSIGN_OR_RETURN(state->structure, BuildQm9Structure(config, nullptr));
  ASSIGN_OR_RETURN(void* stream, state->backend->CreateStream());
  state->stream = static_cast<cudaStream_t>(stream);
  ASSIGN_OR_RETURN(state->blas, LoadCublas());
  RETURN_IF_ERROR(CublasCheck(state->blas->create(&state->cublas), "cublasCreate"));
  RETURN_IF_ERROR(CublasCheck(state->blas->set_stream(state->cublas, state->stream), "cublasSetStream"));
  RETURN_IF_ERROR(CublasCheck(
      state->blas->set_math_mode(state->cublas, options.precision == Precision::kFp32 ? CUBLAS_DEFAULT_MATH
                                                                             : CUBLAS_TF32_TENSOR_OP_MATH),
      "cublasSetMathMode"));
  state->gelu_scale = static_cast<float>(SecondMomentConstant(Activation::kGelu));
  const Qm9NetworkStructure& s = *state->structure;
  for (size_t l = 0; l < s.convs.size(); ++l) {
    const ConvLayer& conv = s.convs[l];
    auto layer = std::make_unique<DeviceLayer>();
    ASSIGN_OR_RETURN(layer->sc, state->backend->Prepare(conv.sc_plan()));
    ASSIGN_OR_RETURN(layer->lin1, state->backend->Prepare(conv.lin1_plan()));
    ASSIGN_OR_RETURN(layer->lin2, state->backend->Prepare(conv.lin2_plan()));
    ASSIGN_OR_RETURN(layer->tp, state->backend->Prepare(conv.tp_plan()));
    const double attr_value = std::sqrt(static_cast<double>(config.num_elements));
    ASSIGN_OR_RETURN(layer->sc_paths, SpeciesPaths(conv.sc_plan(), attr_value));
    ASSIGN_OR_RETURN(layer->lin1_paths, SpeciesPaths(conv.lin1_plan(), attr_value));
    ASSIGN_OR_RETURN(layer->lin2_paths, SpeciesPaths(conv.lin2_plan(), attr_value));
    layer->dim_in = conv.irreps_in().dim();
    layer->dim_out = conv.irreps_out().dim();
    layer->dim_mid = conv.irreps_mid().dim();
    layer->weight_numel = conv.tp_plan().weight_numel();
    layer->mlp_sizes = conv.mlp().sizes();
    const int64_t base = s.layer_offsets[l];
    layer->radial_offsets.assign(conv.mlp().num_matrices(), -1);
    for (const LayerParameterBlock& block : conv.parameter_blocks()) {
      if (block.name == "sc") layer->sc_offset = base + block.offset;
      if (block.name == "lin1") layer->lin1_offset = base + block.offset;
      if (block.name == "lin2") layer->lin2_offset = base + block.offset;
      for (int k = 0; k < conv.mlp().num_matrices(); ++k) {
        if (block.name == absl::StrCat("radial.w", k)) layer->radial_offsets[k] = base + block.offset;
      }
    }
    for (int64_t offset : layer->radial_offsets) {
      if (offset < 0) return absl::InternalError("Qm9CudaNetwork: a radial MLP matrix has no parameters");
    }
    // absent FCTP blocks have weight_numel 0: their offsets are never read
    if (layer->sc_offset < 0) layer->sc_offset = 0;
    if (layer->lin1_offset < 0) layer->lin1_offset = 0;
    if (layer->lin2_offset < 0) layer->lin2_offset = 0;
    if (l + 1 < s.convs.size()) {
      const Gate& gate = s.gates[l];
      if (gate.irreps_in().dim() != layer->dim_out) {
        return absl::InternalError("Qm9CudaNetwork: gate input and convolution output differ");
      }
      std::vector<cuda::GateEntry> entries;
      for (const Gate::ScalarBlock& block : gate.scalar_blocks()) {
        const int kind = block.activation == Activation::kGelu ? 0 : 1;
        const float scale = static_cast<float>(SecondMomentConstant(block.activation));
        for (int u = 0; u < block.mul; ++u) {
          entries.push_back({kind, static_cast<int32_t>(block.in_offset + u), static_cast<int32_t>(block.out_offset + u),
                             0, 1, scale});
        }
      }
      const float sigmoid_scale = static_cast<float>(SecondMomentConstant(Activation::kSigmoid));
      for (const Gate::GatedCopy& copy : gate.gated_copies()) {
        entries.push_back({2, static_cast<int32_t>(copy.in_offset), static_cast<int32_t>(copy.out_offset),
                           static_cast<int32_t>(copy.gate_in_offset), copy.dim, sigmoid_scale});
      }
      layer->has_gate = true;
      layer->num_gate_entries = static_cast<int>(entries.size());
      layer->gate_dim_out = gate.irreps_out().dim();
      RETURN_IF_ERROR(layer->gate_entries.Resize(static_cast<int64_t>(entries.size())));
      RETURN_IF_ERROR(CudaCheck(cudaMemcpy(layer->gate_entries.data(), entries.data(),
                                           sizeof(cuda::GateEntry) * entries.size(), cudaMemcpyHostToDevice),
                                "gate table upload"));
    }
    state->layers.push_back(std::move(layer));
  }
  const int64_t p = s.num_parameters;
  RETURN_IF_ERROR(state->params.Resize(p));
  RETURN_IF_ERROR(state->velocity.Resize(p));
  RETURN_IF_ERROR(state->grad.Resize(p));
  RETURN_IF_ERROR(CudaCheck(cudaMemset(state->params.data(), 0, sizeof(float) * p), "memset"));
  RETURN_IF_ERROR(CudaCheck(cudaMemset(state->velocity.data(), 0, sizeof(float) * p), "memset"));
  RETURN_IF_ERROR(CudaCheck(cudaMemset(state->grad.data(), 0, sizeof(float) * p), "memset"));
  return std::unique_ptr<Qm9CudaNetwork>(new Qm9CudaNetwork(std::move(state)));
}

absl::Status Qm9CudaNetwork::SetParameters(const std::vector<float>& params) {
  State& s = *state_;
  if (static_cast<int64_t>(params.size()) != num_parameters()) {
    return absl::InvalidArgumentError(absl::StrFormat("params: expected %d values (the network's num_parameters), got %d",
                                                      num_parameters(), params.size()));
  }
  RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(s.params.data(), params.data(), sizeof(float) * params.size(),
                                            cudaMemcpyHostToDevice, s.stream),
                            "params upload"));
  RETURN_IF_ERROR(CudaCheck(cudaMemsetAsync(s.velocity.data(), 0, sizeof(float) * params.size(), s.stream), "memset"));
  return Synchronize();
}

namespace {
absl::StatusOr<std::vector<float>> Download(const float* data, int64_t count, cudaStream_t stream) {
  std::vector<float> host(count);
  RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(host.data(), data, sizeof(float) * count, cudaMemcpyDeviceToHost, stream),
                            "download"));
  RETURN_IF_ERROR(CudaCheck(cudaStreamSynchronize(stream), "synchronize"));
  return host;
}
template <class T>
absl::Status Upload(DeviceArray<T>& array, const std::vector<T>& host, cudaStream_t stream) {
  RETURN_IF_ERROR(array.Resize(static_cast<int64_t>(host.size())));
  if (host.empty()) return absl::OkStatus();
  return CudaCheck(cudaMemcpyAsync(array.data(), host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice, stream),
                   "batch upload");
}
}  // namespace

absl::StatusOr<std::vector<float>> Qm9CudaNetwork::Parameters() {
  return Download(state_->params.data(), num_parameters(), state_->stream);
}
absl::StatusOr<std::vector<float>> Qm9CudaNetwork::Gradient() {
  return Download(state_->grad.data(), num_parameters(), state_->stream);
}

absl::Status Qm9CudaNetwork::SetVelocity(const std::vector<float>& velocity) {
  State& s = *state_;
  if (static_cast<int64_t>(velocity.size()) != num_parameters()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "velocity: expected %d values (the network's num_parameters), got %d", num_parameters(), velocity.size()));
  }
  RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(s.velocity.data(), velocity.data(), sizeof(float) * velocity.size(),
                                            cudaMemcpyHostToDevice, s.stream),
                            "velocity upload"));
  return Synchronize();
}
absl::StatusOr<std::vector<float>> Qm9CudaNetwork::Velocity() {
  return Download(state_->velocity.data(), num_parameters(), state_->stream);
}

absl::Status Qm9CudaNetwork::SetBatch(const GraphBatch& batch, const std::vector<float>& targets) {
  State& s = *state_;
  const Qm9NetworkConfig& config = s.config;
  RETURN_IF_ERROR(ValidateGraphBatch(batch, config.num_elements));
  const int64_t n = batch.num_nodes(), e = batch.num_edges();
  const int64_t count = int64_t{batch.num_graphs} * config.num_targets;
  if (!targets.empty() && static_cast<int64_t>(targets.size()) != count) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "targets: expected num_graphs * num_targets = %d * %d = %d values, got %d", batch.num_graphs,
        config.num_targets, count, targets.size()));
  }
  RETURN_IF_ERROR(Synchronize());  // buffers may still be in use
  s.num_nodes = n;
  s.num_edges = e;
  s.num_graphs = batch.num_graphs;
  s.has_targets = !targets.empty();
  // attributes, harmonics and basis in fp64 on the host (as Qm9Network's fp64 path), rounded to fp32
  std::vector<float> attr(n * config.num_elements, 0.f);
  const float one_hot = static_cast<float>(std::sqrt(static_cast<double>(config.num_elements)));
  for (int64_t node = 0; node < n; ++node) attr[node * config.num_elements + batch.species[node]] = one_hot;
  std::vector<double> vectors(e * 3), lengths(e);
  for (int64_t edge = 0; edge < e; ++edge) {
    double squared = 0;
    for (int axis = 0; axis < 3; ++axis) {
      const double v = batch.positions[3 * batch.edge_dst[edge] + axis] - batch.positions[3 * batch.edge_src[edge] + axis];
      vectors[3 * edge + axis] = v;
      squared += v * v;
    }
    lengths[edge] = std::sqrt(squared);
  }
  std::vector<double> sh64(e * SphericalHarmonicsDim(config.lmax)), basis64(e * config.num_basis);
  SphericalHarmonics(config.lmax, vectors.data(), e, sh64.data());
  SmoothFiniteBasis(lengths.data(), e, config.num_basis, config.max_radius, RadialBasisScale(), basis64.data());
  std::vector<int64_t> species_count(config.num_elements, 0);
  for (int64_t node = 0; node < n; ++node) ++species_count[batch.species[node]];
  s.species_rows = *std::max_element(species_count.begin(), species_count.end());
  std::vector<int32_t> order(s.species_rows * config.num_elements, -1);
  std::vector<int64_t> filled(config.num_elements, 0);
  for (int64_t node = 0; node < n; ++node) {
    const int species = batch.species[node];
    order[species * s.species_rows + filled[species]++] = static_cast<int32_t>(node);
  }
  RETURN_IF_ERROR(Upload(s.species_order, order, s.stream));
  RETURN_IF_ERROR(Upload(s.attr, attr, s.stream));
  RETURN_IF_ERROR(Upload(s.sh, std::vector<float>(sh64.begin(), sh64.end()), s.stream));
  RETURN_IF_ERROR(Upload(s.basis, std::vector<float>(basis64.begin(), basis64.end()), s.stream));
  RETURN_IF_ERROR(Upload(s.src, batch.edge_src, s.stream));
  RETURN_IF_ERROR(Upload(s.dst, batch.edge_dst, s.stream));
  RETURN_IF_ERROR(Upload(s.graph, batch.graph_index, s.stream));
  RETURN_IF_ERROR(Upload(s.targets, targets, s.stream));
  RETURN_IF_ERROR(s.predictions.Resize(count));
  RETURN_IF_ERROR(s.grad_predictions.Resize(count));
  RETURN_IF_ERROR(s.loss.Resize(1));
  int64_t max_in = 1, max_out = config.num_targets, max_mid = 1, max_w = 1, max_hidden = 1;
  for (auto& layer : s.layers) {
    DeviceLayer& L = *layer;
    max_in = std::max(max_in, L.dim_in);
    max_out = std::max(max_out, L.dim_out);
    max_mid = std::max(max_mid, L.dim_mid);
    max_w = std::max(max_w, L.weight_numel);
    RETURN_IF_ERROR(L.output.Resize(n * L.dim_out));
    RETURN_IF_ERROR(L.h_src.Resize(e * L.dim_in));
    RETURN_IF_ERROR(L.edge_weights.Resize(e * L.weight_numel));
    RETURN_IF_ERROR(L.agg.Resize(n * L.dim_mid));
    if (L.has_gate) RETURN_IF_ERROR(L.next_input.Resize(n * L.gate_dim_out));
    const int hidden = static_cast<int>(L.mlp_sizes.size()) - 2;
    L.mlp_pre.resize(hidden);
    L.mlp_post.resize(hidden);
    for (int k = 0; k < hidden; ++k) {
      max_hidden = std::max<int64_t>(max_hidden, L.mlp_sizes[k + 1]);
      RETURN_IF_ERROR(L.mlp_pre[k].Resize(e * L.mlp_sizes[k + 1]));
      RETURN_IF_ERROR(L.mlp_post[k].Resize(e * L.mlp_sizes[k + 1]));
    }
  }
  const int64_t max_node = std::max({max_in, max_out, max_mid});
  const int64_t padded = s.species_rows * config.num_elements;
  RETURN_IF_ERROR(s.permuted_x.Resize(padded * max_node));
  RETURN_IF_ERROR(s.permuted_g.Resize(padded * max_node));
  RETURN_IF_ERROR(s.permuted_out.Resize(padded * max_node));
  RETURN_IF_ERROR(s.h.Resize(n * max_node));
  RETURN_IF_ERROR(s.sc_out.Resize(n * max_node));
  RETURN_IF_ERROR(s.lin2_out.Resize(n * max_node));
  RETURN_IF_ERROR(s.messages.Resize(e * max_mid));
  RETURN_IF_ERROR(s.grad_y[0].Resize(n * max_node));
  RETURN_IF_ERROR(s.grad_y[1].Resize(n * max_node));
  RETURN_IF_ERROR(s.grad_x.Resize(n * max_node));
  RETURN_IF_ERROR(s.grad_x_sc.Resize(n * max_node));
  RETURN_IF_ERROR(s.grad_agg.Resize(n * max_node));
  RETURN_IF_ERROR(s.grad_h.Resize(n * max_node));
  RETURN_IF_ERROR(s.grad_messages.Resize(e * max_mid));
  RETURN_IF_ERROR(s.grad_edge_weights.Resize(e * max_w));
  RETURN_IF_ERROR(s.grad_h_src.Resize(e * max_in));
  RETURN_IF_ERROR(s.mlp_grad[0].Resize(e * max_hidden));
  RETURN_IF_ERROR(s.mlp_grad[1].Resize(e * max_hidden));
  return Synchronize();
}

absl::Status Qm9CudaNetwork::EnqueueForward() {
  State& s = *state_;
  for (size_t l = 0; l < s.layers.size(); ++l) RETURN_IF_ERROR(s.ForwardLayer(l));
  const int64_t count = s.num_graphs * s.config.num_targets;
  RETURN_IF_ERROR(CudaCheck(cudaMemsetAsync(s.predictions.data(), 0, sizeof(float) * count, s.stream), "memset"));
  cuda::GraphSum(s.layers.back()->output.data(), s.graph.data(), s.num_nodes, s.config.num_targets,
                 s.predictions.data(), s.stream);
  return CudaCheck(cudaGetLastError(), "graph sum");
}

absl::Status Qm9CudaNetwork::EnqueueLossGradient() {
  State& s = *state_;
  if (!s.has_targets) return absl::FailedPreconditionError("LossGradient: the batch was set without targets");
  RETURN_IF_ERROR(EnqueueForward());
  const int64_t count = s.num_graphs * s.config.num_targets;
  cuda::L1LossGradient(s.predictions.data(), s.targets.data(), count, s.loss.data(), s.grad_predictions.data(),
                       s.stream);
  int current = 0;
  cuda::GraphSumBackward(s.grad_predictions.data(), s.graph.data(), s.num_nodes, s.config.num_targets,
                         s.grad_y[current].data(), s.stream);
  for (size_t l = s.layers.size(); l-- > 0;) {
    RETURN_IF_ERROR(s.BackwardLayer(l, s.grad_y[current].data()));
    if (l == 0) break;
    const DeviceLayer& prev = *s.layers[l - 1];
    cuda::GateBackward(prev.gate_entries.data(), prev.num_gate_entries, prev.output.data(), s.num_nodes, prev.dim_out,
                       prev.gate_dim_out, s.grad_x.data(), s.grad_y[1 - current].data(), s.stream);
    current = 1 - current;
  }
  return CudaCheck(cudaGetLastError(), "loss gradient");
}

absl::Status Qm9CudaNetwork::EnqueueSgdStep(const SgdMomentumOptions& options) {
  State& s = *state_;
  cuda::SgdMomentum(num_parameters(), static_cast<float>(options.lr), static_cast<float>(options.momentum),
                    s.grad.data(), s.velocity.data(), s.params.data(), s.stream);
  return CudaCheck(cudaGetLastError(), "sgd");
}

absl::Status Qm9CudaNetwork::Synchronize() { return CudaCheck(cudaStreamSynchronize(state_->stream), "synchronize"); }

absl::StatusOr<std::vector<float>> Qm9CudaNetwork::Predictions() {
  return Download(state_->predictions.data(), state_->num_graphs * state_->config.num_targets, state_->stream);
}

absl::StatusOr<float> Qm9CudaNetwork::Loss() {
  ASSIGN_OR_RETURN(std::vector<float> loss, Download(state_->loss.data(), 1, state_->stream));
  return loss[0];
}

absl::StatusOr<std::vector<float>> Qm9CudaNetwork::Predict(const std::vector<float>& params, const GraphBatch& batch) {
  RETURN_IF_ERROR(SetParameters(params));
  RETURN_IF_ERROR(SetBatch(batch, {}));
  RETURN_IF_ERROR(EnqueueForward());
  return Predictions();
}

absl::StatusOr<LossAndGradient<float>> Qm9CudaNetwork::LossGradient(const std::vector<float>& params,
                                                                    const GraphBatch& batch,
                                                                    const std::vector<float>& targets) {
  const int64_t count = int64_t{batch.num_graphs} * config().num_targets;
  if (static_cast<int64_t>(targets.size()) != count) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "targets: expected num_graphs * num_targets = %d * %d = %d values, got %d", batch.num_graphs,
        config().num_targets, count, targets.size()));
  }
  RETURN_IF_ERROR(SetParameters(params));
  RETURN_IF_ERROR(SetBatch(batch, targets));
  RETURN_IF_ERROR(EnqueueLossGradient());
  LossAndGradient<float> result;
  ASSIGN_OR_RETURN(result.loss, Loss());
  ASSIGN_OR_RETURN(result.gradient, Gradient());
  ASSIGN_OR_RETURN(result.predictions, Predictions());
  return result;
}

}  // namespace tpserve::nn
