// proto/inference/grpc_service.proto against the public Open Inference Protocol: every field of
// every message (name, number, type), every enum value and every method, transcribed by hand
// from the upstream files, so that clients compiled from those files talk to tpserve unchanged.
//
// Sources (the letter in each row):
//   K  KServe, docs/predict-api/v2/grpc_predict_v2.proto (the protocol's required API)
//   T  Triton Inference Server (triton-inference-server/common), protobuf/grpc_service.proto
//   C  Triton, protobuf/model_config.proto (ModelConfig and its parts: tpserve declares a subset
//      of their fields, each with Triton's number and type)
// The test also fails when the .proto gains a field, value or method this table does not list.
#include <iterator>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.grpc.pb.h"
#include "inference/grpc_service.pb.h"

namespace tpserve::testing {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

struct FieldRow {
  const char* message;  // full name
  const char* field;
  int number;
  const char* type;  // as TypeOf spells it
  char source;
};

// clang-format off
const FieldRow kFields[] = {
  {"inference.ServerLiveResponse", "live", 1, "bool", 'K'},
  {"inference.ServerReadyResponse", "ready", 1, "bool", 'K'},
  {"inference.ModelReadyRequest", "name", 1, "string", 'K'},
  {"inference.ModelReadyRequest", "version", 2, "string", 'K'},
  {"inference.ModelReadyResponse", "ready", 1, "bool", 'K'},
  {"inference.ServerMetadataResponse", "name", 1, "string", 'K'},
  {"inference.ServerMetadataResponse", "version", 2, "string", 'K'},
  {"inference.ServerMetadataResponse", "extensions", 3, "repeated string", 'K'},
  {"inference.ModelMetadataRequest", "name", 1, "string", 'K'},
  {"inference.ModelMetadataRequest", "version", 2, "string", 'K'},
  {"inference.ModelMetadataResponse.TensorMetadata", "name", 1, "string", 'K'},
  {"inference.ModelMetadataResponse.TensorMetadata", "datatype", 2, "string", 'K'},
  {"inference.ModelMetadataResponse.TensorMetadata", "shape", 3, "repeated int64", 'K'},
  {"inference.ModelMetadataResponse", "name", 1, "string", 'K'},
  {"inference.ModelMetadataResponse", "versions", 2, "repeated string", 'K'},
  {"inference.ModelMetadataResponse", "platform", 3, "string", 'K'},
  {"inference.ModelMetadataResponse", "inputs", 4, "repeated inference.ModelMetadataResponse.TensorMetadata", 'K'},
  {"inference.ModelMetadataResponse", "outputs", 5, "repeated inference.ModelMetadataResponse.TensorMetadata", 'K'},
  {"inference.InferParameter", "bool_param", 1, "oneof parameter_choice bool", 'K'},
  {"inference.InferParameter", "int64_param", 2, "oneof parameter_choice int64", 'K'},
  {"inference.InferParameter", "string_param", 3, "oneof parameter_choice string", 'K'},
  {"inference.InferParameter", "double_param", 4, "oneof parameter_choice double", 'T'},
  {"inference.InferParameter", "uint64_param", 5, "oneof parameter_choice uint64", 'T'},
  {"inference.InferTensorContents", "bool_contents", 1, "repeated bool", 'K'},
  {"inference.InferTensorContents", "int_contents", 2, "repeated int32", 'K'},
  {"inference.InferTensorContents", "int64_contents", 3, "repeated int64", 'K'},
  {"inference.InferTensorContents", "uint_contents", 4, "repeated uint32", 'K'},
  {"inference.InferTensorContents", "uint64_contents", 5, "repeated uint64", 'K'},
  {"inference.InferTensorContents", "fp32_contents", 6, "repeated float", 'K'},
  {"inference.InferTensorContents", "fp64_contents", 7, "repeated double", 'K'},
  {"inference.InferTensorContents", "bytes_contents", 8, "repeated bytes", 'K'},
  {"inference.ModelInferRequest.InferInputTensor", "name", 1, "string", 'K'},
  {"inference.ModelInferRequest.InferInputTensor", "datatype", 2, "string", 'K'},
  {"inference.ModelInferRequest.InferInputTensor", "shape", 3, "repeated int64", 'K'},
  {"inference.ModelInferRequest.InferInputTensor", "parameters", 4, "map<string, inference.InferParameter>", 'K'},
  {"inference.ModelInferRequest.InferInputTensor", "contents", 5, "inference.InferTensorContents", 'K'},
  {"inference.ModelInferRequest.InferRequestedOutputTensor", "name", 1, "string", 'K'},
  {"inference.ModelInferRequest.InferRequestedOutputTensor", "parameters", 2, "map<string, inference.InferParameter>", 'K'},
  {"inference.ModelInferRequest", "model_name", 1, "string", 'K'},
  {"inference.ModelInferRequest", "model_version", 2, "string", 'K'},
  {"inference.ModelInferRequest", "id", 3, "string", 'K'},
  {"inference.ModelInferRequest", "parameters", 4, "map<string, inference.InferParameter>", 'K'},
  {"inference.ModelInferRequest", "inputs", 5, "repeated inference.ModelInferRequest.InferInputTensor", 'K'},
  {"inference.ModelInferRequest", "outputs", 6, "repeated inference.ModelInferRequest.InferRequestedOutputTensor", 'K'},
  {"inference.ModelInferRequest", "raw_input_contents", 7, "repeated bytes", 'K'},
  {"inference.ModelInferResponse.InferOutputTensor", "name", 1, "string", 'K'},
  {"inference.ModelInferResponse.InferOutputTensor", "datatype", 2, "string", 'K'},
  {"inference.ModelInferResponse.InferOutputTensor", "shape", 3, "repeated int64", 'K'},
  {"inference.ModelInferResponse.InferOutputTensor", "parameters", 4, "map<string, inference.InferParameter>", 'K'},
  {"inference.ModelInferResponse.InferOutputTensor", "contents", 5, "inference.InferTensorContents", 'K'},
  {"inference.ModelInferResponse", "model_name", 1, "string", 'K'},
  {"inference.ModelInferResponse", "model_version", 2, "string", 'K'},
  {"inference.ModelInferResponse", "id", 3, "string", 'K'},
  {"inference.ModelInferResponse", "parameters", 4, "map<string, inference.InferParameter>", 'K'},
  {"inference.ModelInferResponse", "outputs", 5, "repeated inference.ModelInferResponse.InferOutputTensor", 'K'},
  {"inference.ModelInferResponse", "raw_output_contents", 6, "repeated bytes", 'K'},
  {"inference.ModelStreamInferResponse", "error_message", 1, "string", 'T'},
  {"inference.ModelStreamInferResponse", "infer_response", 2, "inference.ModelInferResponse", 'T'},
  {"inference.ModelInput", "name", 1, "string", 'C'},
  {"inference.ModelInput", "data_type", 2, "enum inference.DataType", 'C'},
  {"inference.ModelInput", "dims", 4, "repeated int64", 'C'},
  {"inference.ModelInput", "optional", 8, "bool", 'C'},
  {"inference.ModelOutput", "name", 1, "string", 'C'},
  {"inference.ModelOutput", "data_type", 2, "enum inference.DataType", 'C'},
  {"inference.ModelOutput", "dims", 3, "repeated int64", 'C'},
  {"inference.ModelParameter", "string_value", 1, "string", 'C'},
  {"inference.ModelConfig", "name", 1, "string", 'C'},
  {"inference.ModelConfig", "platform", 2, "string", 'C'},
  {"inference.ModelConfig", "max_batch_size", 4, "int32", 'C'},
  {"inference.ModelConfig", "input", 5, "repeated inference.ModelInput", 'C'},
  {"inference.ModelConfig", "output", 6, "repeated inference.ModelOutput", 'C'},
  {"inference.ModelConfig", "parameters", 14, "map<string, inference.ModelParameter>", 'C'},
  {"inference.ModelConfig", "backend", 17, "string", 'C'},
  {"inference.ModelConfigRequest", "name", 1, "string", 'T'},
  {"inference.ModelConfigRequest", "version", 2, "string", 'T'},
  {"inference.ModelConfigResponse", "config", 1, "inference.ModelConfig", 'T'},
  {"inference.ModelRepositoryParameter", "bool_param", 1, "oneof parameter_choice bool", 'T'},
  {"inference.ModelRepositoryParameter", "int64_param", 2, "oneof parameter_choice int64", 'T'},
  {"inference.ModelRepositoryParameter", "string_param", 3, "oneof parameter_choice string", 'T'},
  {"inference.ModelRepositoryParameter", "bytes_param", 4, "oneof parameter_choice bytes", 'T'},
  {"inference.RepositoryIndexRequest", "repository_name", 1, "string", 'T'},
  {"inference.RepositoryIndexRequest", "ready", 2, "bool", 'T'},
  {"inference.RepositoryIndexResponse.ModelIndex", "name", 1, "string", 'T'},
  {"inference.RepositoryIndexResponse.ModelIndex", "version", 2, "string", 'T'},
  {"inference.RepositoryIndexResponse.ModelIndex", "state", 3, "string", 'T'},
  {"inference.RepositoryIndexResponse.ModelIndex", "reason", 4, "string", 'T'},
  {"inference.RepositoryIndexResponse", "models", 1, "repeated inference.RepositoryIndexResponse.ModelIndex", 'T'},
  {"inference.RepositoryModelLoadRequest", "repository_name", 1, "string", 'T'},
  {"inference.RepositoryModelLoadRequest", "model_name", 2, "string", 'T'},
  {"inference.RepositoryModelLoadRequest", "parameters", 3, "map<string, inference.ModelRepositoryParameter>", 'T'},
  {"inference.RepositoryModelUnloadRequest", "repository_name", 1, "string", 'T'},
  {"inference.RepositoryModelUnloadRequest", "model_name", 2, "string", 'T'},
  {"inference.RepositoryModelUnloadRequest", "parameters", 3, "map<string, inference.ModelRepositoryParameter>", 'T'},
};

// Messages the specification defines without fields.
const char* const kEmptyMessages[] = {
  "inference.ServerLiveRequest", "inference.ServerReadyRequest", "inference.ServerMetadataRequest",  // K
  "inference.RepositoryModelLoadResponse", "inference.RepositoryModelUnloadResponse",               // T
};

// C: enum DataType of model_config.proto.
const std::pair<const char*, int> kDataTypeValues[] = {
  {"TYPE_INVALID", 0}, {"TYPE_BOOL", 1}, {"TYPE_UINT8", 2}, {"TYPE_UINT16", 3}, {"TYPE_UINT32", 4},
  {"TYPE_UINT64", 5}, {"TYPE_INT8", 6}, {"TYPE_INT16", 7}, {"TYPE_INT32", 8}, {"TYPE_INT64", 9},
  {"TYPE_FP16", 10}, {"TYPE_FP32", 11}, {"TYPE_FP64", 12}, {"TYPE_STRING", 13}, {"TYPE_BF16", 14},
};

struct MethodRow {
  const char* name;
  const char* input;
  const char* output;
  bool client_streaming, server_streaming;
  char source;
};
const MethodRow kMethods[] = {
  {"ServerLive", "inference.ServerLiveRequest", "inference.ServerLiveResponse", false, false, 'K'},
  {"ServerReady", "inference.ServerReadyRequest", "inference.ServerReadyResponse", false, false, 'K'},
  {"ModelReady", "inference.ModelReadyRequest", "inference.ModelReadyResponse", false, false, 'K'},
  {"ServerMetadata", "inference.ServerMetadataRequest", "inference.ServerMetadataResponse", false, false, 'K'},
  {"ModelMetadata", "inference.ModelMetadataRequest", "inference.ModelMetadataResponse", false, false, 'K'},
  {"ModelInfer", "inference.ModelInferRequest", "inference.ModelInferResponse", false, false, 'K'},
  {"ModelStreamInfer", "inference.ModelInferRequest", "inference.ModelStreamInferResponse", true, true, 'T'},
  {"ModelConfig", "inference.ModelConfigRequest", "inference.ModelConfigResponse", false, false, 'T'},
  {"RepositoryIndex", "inference.RepositoryIndexRequest", "inference.RepositoryIndexResponse", false, false, 'T'},
  {"RepositoryModelLoad", "inference.RepositoryModelLoadRequest", "inference.RepositoryModelLoadResponse", false,
   false, 'T'},
  {"RepositoryModelUnload", "inference.RepositoryModelUnloadRequest", "inference.RepositoryModelUnloadResponse",
   false, false, 'T'},
};
// clang-format on

// "string", "repeated int64", "inference.InferTensorContents", "enum inference.DataType",
// "map<string, inference.InferParameter>", "oneof parameter_choice bool".
std::string TypeOf(const FieldDescriptor& field) {
  if (field.is_map()) {
    return "map<" + TypeOf(*field.message_type()->map_key()) + ", " +
           TypeOf(*field.message_type()->map_value()) + ">";
  }
  std::string base;
  if (field.type() == FieldDescriptor::TYPE_MESSAGE) {
    base = field.message_type()->full_name();
  } else if (field.type() == FieldDescriptor::TYPE_ENUM) {
    base = "enum " + field.enum_type()->full_name();
  } else {
    base = field.type_name();  // "int64", "string", "bytes", ...
  }
  if (field.is_repeated()) return "repeated " + base;
  if (field.real_containing_oneof() != nullptr) return "oneof " + field.real_containing_oneof()->name() + " " + base;
  return base;
}

const google::protobuf::FileDescriptor* File() { return inference::ModelInferRequest::descriptor()->file(); }

void CollectMessages(const Descriptor* message, std::vector<const Descriptor*>* out) {
  if (message->options().map_entry()) return;  // map<,> entries are checked as the map's type
  out->push_back(message);
  for (int i = 0; i < message->nested_type_count(); ++i) CollectMessages(message->nested_type(i), out);
}

TEST(KserveProto, PackageIsInference) { EXPECT_EQ(File()->package(), "inference"); }

TEST(KserveProto, EveryTranscribedFieldHasTheSpecsNameNumberAndType) {
  for (const FieldRow& row : kFields) {
    SCOPED_TRACE(std::string(row.message) + "." + row.field + " (source " + row.source + ")");
    const Descriptor* message = File()->pool()->FindMessageTypeByName(row.message);
    ASSERT_NE(message, nullptr) << "message missing";
    const FieldDescriptor* field = message->FindFieldByName(row.field);
    ASSERT_NE(field, nullptr) << "field missing";
    EXPECT_EQ(field->number(), row.number);
    EXPECT_EQ(TypeOf(*field), row.type);
  }
}

TEST(KserveProto, DeclaresNoFieldOrMessageTheTableLacks) {
  std::set<std::pair<std::string, std::string>> listed;
  std::set<std::string> listed_messages(std::begin(kEmptyMessages), std::end(kEmptyMessages));
  for (const FieldRow& row : kFields) {
    listed.emplace(row.message, row.field);
    listed_messages.insert(row.message);
  }
  std::vector<const Descriptor*> messages;
  for (int i = 0; i < File()->message_type_count(); ++i) CollectMessages(File()->message_type(i), &messages);
  std::set<std::string> declared_messages;
  for (const Descriptor* message : messages) {
    declared_messages.insert(message->full_name());
    EXPECT_TRUE(listed_messages.count(message->full_name())) << message->full_name() << " is not in the table";
    for (int f = 0; f < message->field_count(); ++f) {
      EXPECT_TRUE(listed.count({message->full_name(), message->field(f)->name()}))
          << message->full_name() << "." << message->field(f)->name() << " is not in the table";
    }
  }
  for (const std::string& name : listed_messages) EXPECT_TRUE(declared_messages.count(name)) << name << " missing";
  for (const char* name : kEmptyMessages) {
    const Descriptor* message = File()->pool()->FindMessageTypeByName(name);
    ASSERT_NE(message, nullptr) << name;
    EXPECT_EQ(message->field_count(), 0) << name << " has fields; the spec defines none";
  }
}

TEST(KserveProto, DataTypeEnumHasTritonsValues) {
  const google::protobuf::EnumDescriptor* data_type = File()->FindEnumTypeByName("DataType");
  ASSERT_NE(data_type, nullptr);
  EXPECT_EQ(data_type->value_count(), static_cast<int>(std::size(kDataTypeValues)));
  for (const auto& [name, number] : kDataTypeValues) {
    const google::protobuf::EnumValueDescriptor* value = data_type->FindValueByName(name);
    ASSERT_NE(value, nullptr) << name;
    EXPECT_EQ(value->number(), number) << name;
  }
  EXPECT_EQ(File()->enum_type_count(), 1);
}

TEST(KserveProto, ServiceHasTheSpecsMethodsAndMessages) {
  const google::protobuf::ServiceDescriptor* service = File()->FindServiceByName("GRPCInferenceService");
  ASSERT_NE(service, nullptr);
  EXPECT_EQ(service->full_name(), "inference.GRPCInferenceService");
  EXPECT_EQ(service->method_count(), static_cast<int>(std::size(kMethods)));
  for (const MethodRow& row : kMethods) {
    SCOPED_TRACE(std::string(row.name) + " (source " + row.source + ")");
    const google::protobuf::MethodDescriptor* method = service->FindMethodByName(row.name);
    ASSERT_NE(method, nullptr);
    EXPECT_EQ(method->input_type()->full_name(), row.input);
    EXPECT_EQ(method->output_type()->full_name(), row.output);
    EXPECT_EQ(method->client_streaming(), row.client_streaming);
    EXPECT_EQ(method->server_streaming(), row.server_streaming);
  }
}

}  // namespace
}  // namespace tpserve::testing
