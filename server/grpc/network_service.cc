#include "server/grpc/network_service.h"

#include "absl/strings/str_cat.h"
#include "server/grpc/convert.h"
#include "server/grpc/graph_codec.h"
#include "server/grpc/request_parsing.h"
#include "server/grpc/sync_methods.h"

namespace tpserve::server {
namespace {

// What Predict and TrainStep read before their own fields.
struct NetworkCall {
  std::shared_ptr<NetworkModel> model;
  nn::GraphBatch graphs;
};

// The caller's authorization, then the model (an unknown model or one of the other kind is named
// before its input is), then the graph batch. Not OK: the call is finished with that status.
grpc::Status ReadNetworkCall(const ServiceEnv& env, RpcScope& scope, const std::string& model_name,
                             const tp::v1::GraphBatch& wire_graphs, NetworkCall* call) {
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  scope.set_model(model_name);
  absl::StatusOr<std::shared_ptr<NetworkModel>> model = env.core->FindNetworkModel(model_name);
  if (!model.ok()) return scope.Finish(model.status());
  absl::StatusOr<nn::GraphBatch> graphs = wire::DecodeGraphBatch(wire_graphs);
  if (!graphs.ok()) return scope.Finish(graphs.status());
  call->model = *std::move(model);
  call->graphs = *std::move(graphs);
  return grpc::Status::OK;
}

}  // namespace

NetworkServiceImpl::NetworkServiceImpl(const ServiceEnv& env) : env_(env) {
  using Self = NetworkServiceImpl;
  AddMethod(UnaryMethod(MethodPath<tp::v1::NetworkService>("Predict"), this, &env_, &Self::Predict));
  AddMethod(UnaryMethod(MethodPath<tp::v1::NetworkService>("TrainStep"), this, &env_, &Self::TrainStep));
}

grpc::Status NetworkServiceImpl::Predict(grpc::ServerContext* context, const tp::v1::PredictRequest* request,
                                         tp::v1::PredictResponse* response) {
  RpcScope scope(env_, "Predict", context);
  NetworkCall call;
  if (grpc::Status read = ReadNetworkCall(env_, scope, request->model(), request->graphs(), &call); !read.ok()) {
    return read;
  }
  const std::shared_ptr<NetworkModel>& model = call.model;
  const nn::GraphBatch& graphs = call.graphs;
  const tp::v1::DType dtype = request->output_dtype();
  if (dtype != tp::v1::DTYPE_UNSPECIFIED && dtype != tp::v1::DTYPE_FLOAT32 && dtype != tp::v1::DTYPE_FLOAT64) {
    return scope.Finish(absl::InvalidArgumentError(
        absl::StrCat("output_dtype ", static_cast<int>(dtype), ": expected float32 or float64")));
  }
  scope.MarkStage("read");
  absl::StatusOr<NetworkPrediction> prediction = env_.core->Predict(request->model(), graphs);
  if (!prediction.ok()) return scope.Finish(prediction.status());
  scope.MarkStage("core");
  scope.set_device(model->device());
  wire::EncodeDoubles(prediction->outputs, graphs.num_graphs, prediction->num_targets, dtype,
                      response->mutable_outputs());
  response->set_model_version(prediction->version);
  return scope.Finish(grpc::Status::OK);
}

grpc::Status NetworkServiceImpl::TrainStep(grpc::ServerContext* context, const tp::v1::TrainStepRequest* request,
                                           tp::v1::TrainStepResponse* response) {
  RpcScope scope(env_, "TrainStep", context);
  NetworkCall call;
  if (grpc::Status read = ReadNetworkCall(env_, scope, request->model(), request->graphs(), &call); !read.ok()) {
    return read;
  }
  const std::shared_ptr<NetworkModel>& model = call.model;
  const nn::GraphBatch& graphs = call.graphs;
  const int num_targets = model->spec().num_targets;
  absl::StatusOr<std::vector<double>> targets =
      wire::DecodeDoubles(request->targets(), "targets", {graphs.num_graphs, num_targets});
  if (!targets.ok()) return scope.Finish(targets.status());
  scope.MarkStage("read");
  absl::StatusOr<NetworkTrainResult> result =
      env_.core->TrainStep(request->model(), graphs, *targets, request->learning_rate(), request->momentum(),
                           request->expected_version());
  if (!result.ok()) return scope.Finish(result.status());
  scope.MarkStage("core");
  scope.set_device(model->device());
  response->set_loss(result->loss);
  response->set_model_version(result->version);
  wire::EncodeDoubles(result->predictions, graphs.num_graphs, result->num_targets, tp::v1::DTYPE_FLOAT64,
                      response->mutable_predictions());
  return scope.Finish(grpc::Status::OK);
}

}  // namespace tpserve::server
