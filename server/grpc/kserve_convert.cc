#include "server/grpc/kserve_convert.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/core/tensor.h"

namespace tpserve::server::kserve {
namespace {

using Request = inference::ModelInferRequest;
using Parameters = google::protobuf::Map<std::string, inference::InferParameter>;

// The value of string parameter `key`; nullopt when absent; INVALID_ARGUMENT when another type.
absl::StatusOr<std::optional<std::string>> StringParameter(const Parameters& parameters, const std::string& key,
                                                           const char* expected) {
  auto it = parameters.find(key);
  if (it == parameters.end()) return std::optional<std::string>();
  if (it->second.parameter_choice_case() != inference::InferParameter::kStringParam) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter '", key, "': expected a string_param, one of ", expected));
  }
  return std::optional<std::string>(it->second.string_param());
}

// One input's elements from its typed contents (the field of its datatype; FP16 and BF16 have none).
absl::StatusOr<HostTensor> DecodeContents(const Request::InferInputTensor& input, tp::v1::DType dtype,
                                          wire::Decode mode) {
  std::vector<int64_t> shape(input.shape().begin(), input.shape().end());
  const int64_t numel = wire::ShapeElements(shape);
  const std::string what = absl::StrCat(input.name(), " ", ShapeString(shape), " ", DTypeToName(dtype));
  if (numel < 0 || shape.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected a shape [batch, dim] of non-negative extents"));
  }
  const inference::InferTensorContents& contents = input.contents();
  const bool fp64 = dtype == tp::v1::DTYPE_FLOAT64;
  if (dtype != tp::v1::DTYPE_FLOAT32 && !fp64) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": this datatype has no typed contents; send it in raw_input_contents"));
  }
  const int64_t given = fp64 ? contents.fp64_contents_size() : contents.fp32_contents_size();
  if (given != numel) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", given, " values in contents.",
                                                   fp64 ? "fp64_contents" : "fp32_contents", "; expected ", numel));
  }
  if (!fp64) {
    if (mode == wire::Decode::kBorrow) {
      return HostTensor::Borrow(std::move(shape), contents.fp32_contents().data(), static_cast<size_t>(numel));
    }
    return HostTensor(std::move(shape), {contents.fp32_contents().begin(), contents.fp32_contents().end()});
  }
  std::vector<float> values(contents.fp64_contents().begin(), contents.fp64_contents().end());
  return HostTensor(std::move(shape), std::move(values));
}

bool HasAnyContents(const inference::InferTensorContents& c) {
  return c.bool_contents_size() + c.int_contents_size() + c.int64_contents_size() + c.uint_contents_size() +
             c.uint64_contents_size() + c.fp32_contents_size() + c.fp64_contents_size() + c.bytes_contents_size() >
         0;
}

const HostTensor* OutputTensor(const std::string& name, const InferenceResult& result) {
  if (name == kOutputOut) return &result.out;
  if (name == kOutputGradX1) return &result.grad_x1;
  if (name == kOutputGradX2) return &result.grad_x2;
  if (name == kOutputGradWeight) return &result.grad_weight;
  return nullptr;
}

}  // namespace

tp::v1::DType DTypeFromName(const std::string& datatype) {
  if (datatype == "FP32") return tp::v1::DTYPE_FLOAT32;
  if (datatype == "FP64") return tp::v1::DTYPE_FLOAT64;
  if (datatype == "FP16") return tp::v1::DTYPE_FLOAT16;
  if (datatype == "BF16") return tp::v1::DTYPE_BFLOAT16;
  return tp::v1::DTYPE_UNSPECIFIED;
}

const char* DTypeToName(tp::v1::DType dtype) {
  switch (dtype) {
    case tp::v1::DTYPE_FLOAT64: return "FP64";
    case tp::v1::DTYPE_FLOAT16: return "FP16";
    case tp::v1::DTYPE_BFLOAT16: return "BF16";
    default: return "FP32";
  }
}

namespace {

absl::StatusOr<InferCall> Convert(const Request& request, wire::Decode mode, std::vector<HostTensor>* decoded) {
  InferCall call;
  InferenceRequest& r = call.request;
  r.model = request.model_name();

  // ---- inputs --------------------------------------------------------------------------
  const int raw_count = decoded != nullptr ? static_cast<int>(decoded->size()) : request.raw_input_contents_size();
  const bool raw = raw_count > 0;
  if (raw && raw_count != request.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat("raw_input_contents: ", raw_count,
                                                   " entries for ", request.inputs_size(),
                                                   " inputs; expected one per input, in the order of inputs"));
  }
  bool have_x1 = false, have_x2 = false, have_grad_out = false;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const Request::InferInputTensor& input = request.inputs(i);
    HostTensor* slot = nullptr;
    bool* seen = nullptr;
    if (input.name() == kInputX1) {
      slot = &r.x1, seen = &have_x1;
    } else if (input.name() == kInputX2) {
      slot = &r.x2, seen = &have_x2;
    } else if (input.name() == kInputGradOut) {
      slot = &r.grad_out, seen = &have_grad_out;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input.name(), "': expected x1, x2 or grad_out (see ModelConfig)"));
    }
    if (*seen) return absl::InvalidArgumentError(absl::StrCat("input '", input.name(), "' appears twice"));
    *seen = true;
    const tp::v1::DType dtype = DTypeFromName(input.datatype());
    if (dtype == tp::v1::DTYPE_UNSPECIFIED) {
      return absl::InvalidArgumentError(absl::StrCat("input '", input.name(), "': datatype '", input.datatype(),
                                                     "'; expected FP32, FP64, FP16 or BF16"));
    }
    if (input.name() == kInputX1) call.dtype = dtype;
    absl::StatusOr<HostTensor> tensor = absl::UnknownError("not decoded");
    if (raw) {
      if (HasAnyContents(input.contents())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input '", input.name(), "': has contents although the request uses raw_input_contents; expected one "
            "encoding for every input"));
      }
      if (decoded != nullptr) {
        tensor = std::move((*decoded)[i]);
      } else {
        tensor = wire::DecodeTensorBytes({input.shape().begin(), input.shape().end()}, dtype,
                                         request.raw_input_contents(i), input.name().c_str(), mode);
      }
    } else {
      tensor = DecodeContents(input, dtype, mode);
    }
    if (!tensor.ok()) return tensor.status();
    *slot = *std::move(tensor);
  }
  if (!have_x1 || !have_x2) {
    return absl::InvalidArgumentError(absl::StrCat("input '", have_x1 ? kInputX2 : kInputX1,
                                                   "' is missing; expected inputs x1 [batch, dim_in1] and x2 "
                                                   "[batch, dim_in2] (and grad_out [batch, dim_out] for gradients)"));
  }
  call.raw_outputs = raw || wire::DTypeSize(call.dtype) == 2;  // FP16/BF16 have no typed field

  // ---- parameters ----------------------------------------------------------------------
  absl::StatusOr<std::optional<std::string>> loss = StringParameter(request.parameters(), "loss", "sum, sum_tanh");
  if (!loss.ok()) return loss.status();
  if (loss->has_value()) {
    if (have_grad_out) {
      return absl::InvalidArgumentError("parameter 'loss' and input 'grad_out' together; expected one cotangent");
    }
    if (**loss == "sum") {
      r.loss = Loss::kSum;
    } else if (**loss == "sum_tanh") {
      r.loss = Loss::kSumTanh;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("parameter 'loss' = '", **loss, "'; expected sum or sum_tanh"));
    }
  }
  const bool backward = have_grad_out || r.loss.has_value();
  r.op = backward ? Op::kBackward : Op::kForward;

  absl::StatusOr<std::optional<std::string>> precision =
      StringParameter(request.parameters(), "precision", "fp32, tf32, bf16");
  if (!precision.ok()) return precision.status();
  if (precision->has_value()) {
    if (**precision == "fp32") {
      r.precision = Precision::kFp32;
    } else if (**precision == "tf32") {
      r.precision = Precision::kTf32;
    } else if (**precision == "bf16") {
      r.precision = Precision::kBf16;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter 'precision' = '", **precision, "'; expected fp32, tf32 or bf16"));
    }
  }

  absl::StatusOr<std::optional<std::string>> weight_grad =
      StringParameter(request.parameters(), "weight_grad", "none, accumulate");
  if (!weight_grad.ok()) return weight_grad.status();
  bool accumulate = false;
  if (weight_grad->has_value()) {
    if (**weight_grad == "accumulate") {
      accumulate = true;
    } else if (**weight_grad != "none") {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter 'weight_grad' = '", **weight_grad,
          "'; expected none or accumulate (request the output grad_weight to have it returned)"));
    }
    if (accumulate && !backward) {
      return absl::InvalidArgumentError(
          "parameter 'weight_grad' needs a gradient call: an input grad_out or the parameter loss");
    }
  }

  // ---- outputs -------------------------------------------------------------------------
  std::vector<std::string> available;
  if (!backward) {
    available = {kOutputOut};
  } else {
    available = {kOutputGradX1, kOutputGradX2, kOutputGradWeight};
    if (r.loss.has_value()) available.insert(available.begin(), kOutputOut);
  }
  for (const Request::InferRequestedOutputTensor& output : request.outputs()) {
    if (std::find(available.begin(), available.end(), output.name()) == available.end()) {
      const bool gradient = output.name() == kOutputGradX1 || output.name() == kOutputGradX2 ||
                            output.name() == kOutputGradWeight;
      return absl::InvalidArgumentError(absl::StrCat(
          "output '", output.name(), "': ",
          gradient ? "a gradient needs an input grad_out or the parameter loss"
                   : absl::StrCat("this call produces ", absl::StrJoin(available, ", ")),
          output.name() == kOutputOut && backward ? " (out comes back with a loss, not with grad_out)" : ""));
    }
    if (std::find(call.outputs.begin(), call.outputs.end(), output.name()) != call.outputs.end()) {
      return absl::InvalidArgumentError(absl::StrCat("output '", output.name(), "' is requested twice"));
    }
    call.outputs.push_back(output.name());
  }
  if (call.outputs.empty()) {  // everything the call produces, but the weight gradient only on request
    for (const std::string& name : available) {
      if (name != kOutputGradWeight) call.outputs.push_back(name);
    }
  }
  auto wants = [&](const char* name) {
    return std::find(call.outputs.begin(), call.outputs.end(), name) != call.outputs.end();
  };
  if (backward) {
    r.want_out = wants(kOutputOut);
    r.want_grad_x1 = wants(kOutputGradX1);
    r.want_grad_x2 = wants(kOutputGradX2);
    if (wants(kOutputGradWeight)) {
      if (accumulate) {
        return absl::InvalidArgumentError(
            "output 'grad_weight' with weight_grad = 'accumulate'; expected one (returned or accumulated)");
      }
      r.weight_grad = WeightGradMode::kReturn;
    } else {
      r.weight_grad = accumulate ? WeightGradMode::kAccumulate : WeightGradMode::kNone;
    }
  }
  return call;
}

}  // namespace

absl::StatusOr<InferCall> FromProto(const Request& request, wire::Decode mode) {
  return Convert(request, mode, nullptr);
}

absl::StatusOr<InferCall> FromProto(const Request& request, std::vector<HostTensor> raw_inputs) {
  return Convert(request, wire::Decode::kBorrow, &raw_inputs);
}

void ToProto(const InferCall& call, const InferenceResult& result, inference::ModelInferResponse* out) {
  for (size_t i = 0; i < call.outputs.size(); ++i) {
    const std::string& name = call.outputs[i];
    const HostTensor* tensor = OutputTensor(name, result);
    if (tensor == nullptr || !tensor->present()) continue;
    inference::ModelInferResponse::InferOutputTensor* output = out->add_outputs();
    output->set_name(name);
    output->set_datatype(DTypeToName(call.dtype));
    for (int64_t extent : tensor->shape) output->add_shape(extent);
    if (call.raw_outputs) {
      const int index = out->outputs_size() - 1;
      while (out->raw_output_contents_size() <= index) out->add_raw_output_contents();
      std::string* bytes = out->mutable_raw_output_contents(index);
      // Written there by the device already (out_into): nothing to copy.
      if (call.dtype == tp::v1::DTYPE_FLOAT32 && bytes->size() == tensor->size() * sizeof(float) &&
          static_cast<const void*>(bytes->data()) == static_cast<const void*>(tensor->values())) {
        continue;
      }
      bytes->clear();
      wire::FloatsToBytes(tensor->values(), tensor->size(), call.dtype, bytes);
    } else if (call.dtype == tp::v1::DTYPE_FLOAT64) {
      auto* values = output->mutable_contents()->mutable_fp64_contents();
      values->Reserve(static_cast<int>(tensor->size()));
      for (size_t k = 0; k < tensor->size(); ++k) values->AddAlreadyReserved(tensor->values()[k]);
    } else {
      auto* values = output->mutable_contents()->mutable_fp32_contents();
      values->Resize(static_cast<int>(tensor->size()), 0.0f);
      std::memcpy(values->mutable_data(), tensor->values(), tensor->size() * sizeof(float));
    }
  }
  // A pre-sized raw entry past the outputs actually produced would confuse clients.
  while (out->raw_output_contents_size() > (call.raw_outputs ? out->outputs_size() : 0)) {
    out->mutable_raw_output_contents()->RemoveLast();
  }
}

}  // namespace tpserve::server::kserve
