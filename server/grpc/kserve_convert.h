// The Open Inference Protocol's messages (package inference, proto/inference/grpc_service.proto)
// <-> the core's types: datatype names, input tensors in either encoding (typed `contents` or
// `raw_input_contents`) -> an InferenceRequest, results -> output tensors. What convert.h is to
// tp.v1; bytes are interpreted only by tensor_codec.h, so both protocols agree on every byte.
//
// How a ModelInfer call maps onto the core (docs/SERVER.md, "Open Inference Protocol"):
//   inputs   x1 [batch, dim_in1], x2 [batch, dim_in2]            required
//            grad_out [batch, dim_out]                             optional: makes the call a Backward
//   params   loss = "sum" | "sum_tanh" (string)                    a Backward with a named loss instead
//            weight_grad = "none" | "accumulate" (string)         accumulate: add d/dw into the model's
//                                                                  gradient buffer (tp.v1 GetGradient/SgdStep)
//            precision = "fp32" | "tf32" | "bf16" (string)
//   outputs  forward: out.  backward: grad_x1, grad_x2 (default), out (loss only), grad_weight
//            ([weight_numel], only when requested; same inline limit as tp.v1 Backward).
// Outputs come back in x1's datatype, in the encoding the request used (raw when the datatype has
// no typed field: FP16, BF16). Unknown parameters are ignored, as the protocol's servers do.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference/grpc_service.pb.h"
#include "server/core/request.h"
#include "server/grpc/tensor_codec.h"

namespace tpserve::server::kserve {

// "FP32" -> DTYPE_FLOAT32, "FP64", "FP16", "BF16"; DTYPE_UNSPECIFIED for any other name.
tp::v1::DType DTypeFromName(const std::string& datatype);
const char* DTypeToName(tp::v1::DType dtype);  // "FP32", ...; "FP32" for unspecified

// The request parameters and tensor names of the mapping above.
inline constexpr char kInputX1[] = "x1";
inline constexpr char kInputX2[] = "x2";
inline constexpr char kInputGradOut[] = "grad_out";
inline constexpr char kOutputOut[] = "out";
inline constexpr char kOutputGradX1[] = "grad_x1";
inline constexpr char kOutputGradX2[] = "grad_x2";
inline constexpr char kOutputGradWeight[] = "grad_weight";

// A ModelInfer request as the core runs it, and what its response carries.
struct InferCall {
  InferenceRequest request;
  tp::v1::DType dtype = tp::v1::DTYPE_FLOAT32;  // of every output: x1's datatype
  bool raw_outputs = false;                      // answer in raw_output_contents
  std::vector<std::string> outputs;              // output names, in the response's order
};

// INVALID_ARGUMENT naming what was expected for: unknown or repeated input names, missing x1/x2,
// unsupported datatypes, mixed encodings, element counts, bad parameter values, outputs the call
// does not produce. Shapes against the model are the core's to check (Validate). kBorrow: FP32
// elements are read in place from `request`, which must outlive the core's use of them.
absl::StatusOr<InferCall> FromProto(const inference::ModelInferRequest& request, wire::Decode mode);
// The same for a request whose raw_input_contents the transport read and decoded itself (into
// page-locked memory; `raw_inputs` holds one FP32 tensor per input, in order, and `request` none).
absl::StatusOr<InferCall> FromProto(const inference::ModelInferRequest& request, std::vector<HostTensor> raw_inputs);

// Appends call.outputs from `result` (shape, datatype, elements in the call's encoding). A raw
// entry already present at an output's index is kept when it already holds that output's values
// (the device wrote them there: InferenceRequest::out_into), and replaced otherwise.
void ToProto(const InferCall& call, const InferenceResult& result, inference::ModelInferResponse* out);

}  // namespace tpserve::server::kserve
