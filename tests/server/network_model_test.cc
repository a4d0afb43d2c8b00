// Network models (kind "qm9") through a real server on loopback: CreateModel with a qm9 spec,
// GetModel/ListModels/DeleteModel, NetworkService.Predict and TrainStep (the loss goes down on
// generated molecules; results equal the network library's own), bad graphs, limits, the wrong
// kind both ways, concurrent steps, and parameters and velocity surviving a restart of tpserve.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "kernels/cpu/cpu_backend.h"
#include "nn/data/molecule_generator.h"
#include "nn/qm9_network.h"
#include "nn/sgd.h"
#include "server/core/model_repository.h"
#include "tests/server/server_test_util.h"
#include "tests/support/tpserve_process.h"
#include "tp/v1/tensor_product.grpc.pb.h"
#include "wire/graph_wire.h"

namespace tpserve::testing {
namespace {

// Small enough for a loaded 2-core machine; the same code path as the shapes.
constexpr int kLmax = 1, kMul = 4, kLayers = 3;

struct Stubs {
  explicit Stubs(const std::string& target)
      : channel(grpc::CreateChannel(target, grpc::InsecureChannelCredentials())),
        models(tp::v1::ModelService::NewStub(channel)),
        network(tp::v1::NetworkService::NewStub(channel)),
        compute(tp::v1::TensorProductService::NewStub(channel)) {}
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<tp::v1::ModelService::Stub> models;
  std::unique_ptr<tp::v1::NetworkService::Stub> network;
  std::unique_ptr<tp::v1::TensorProductService::Stub> compute;
};

grpc::Status CreateQm9(Stubs& stubs, const std::string& name, uint64_t seed, tp::v1::ModelInfo* info,
                       int lmax = kLmax) {
  return CreateQm9Model(*stubs.models, name, lmax, kMul, kLayers, seed, info);
}

nn::data::LabeledBatch Batch(uint64_t seed, int molecules = 27) {
  return *nn::data::MakeBatch(nn::data::GenerateMolecules(molecules, seed), 0, molecules);
}

tp::v1::PredictRequest PredictRequest(const std::string& model, const nn::GraphBatch& graphs) {
  tp::v1::PredictRequest request;
  request.set_model(model);
  wire::EncodeGraphBatch(graphs, request.mutable_graphs());
  return request;
}

tp::v1::TrainStepRequest TrainRequest(const std::string& model, const nn::data::LabeledBatch& batch) {
  return wire::MakeTrainStepRequest(model, batch, /*learning_rate=*/1e-2, /*momentum=*/0.9);
}

grpc::Status Predict(Stubs& stubs, const tp::v1::PredictRequest& request, tp::v1::PredictResponse* response) {
  grpc::ClientContext context;
  return stubs.network->Predict(&context, request, response);
}

grpc::Status Train(Stubs& stubs, const tp::v1::TrainStepRequest& request, tp::v1::TrainStepResponse* response) {
  grpc::ClientContext context;
  return stubs.network->TrainStep(&context, request, response);
}

nn::Qm9Network LibraryNetwork(CpuBackend* backend, int lmax = kLmax) {
  nn::Qm9NetworkConfig config;
  config.lmax = lmax;
  config.mul = kMul;
  config.layers = kLayers;
  return *nn::Qm9Network::Create(config, backend);
}

void ExpectNear(const std::vector<double>& got, const std::vector<double>& want, double tolerance) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tolerance * (1 + std::abs(want[i]))) << i;
}

TEST(NetworkModelTest, CreatePredictAndTrain_LossGoesDownAndResultsMatchTheLibrary) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  Stubs stubs(server->target());
  tp::v1::ModelInfo info;
  ASSERT_TRUE(CreateQm9(stubs, "qm9", 7, &info).ok());
  EXPECT_EQ(info.kind(), "qm9");
  EXPECT_EQ(info.qm9().lmax(), kLmax);
  EXPECT_EQ(info.qm9().mul(), kMul);
  EXPECT_EQ(info.qm9().layers(), kLayers);
  EXPECT_EQ(info.qm9().num_elements(), 5);
  EXPECT_EQ(info.qm9().num_targets(), 4);
  EXPECT_EQ(info.version(), 1u);
  EXPECT_EQ(info.device(), "cpu");  // the in-process server's network models compute on the CPU
  CpuBackend backend(CpuBackendOptions{1});
  nn::Qm9Network network = LibraryNetwork(&backend);
  EXPECT_EQ(info.weight_numel(), network.num_parameters());

  // GetModel and ListModels show the kind beside tensor-product models.
  ASSERT_TRUE(server->core().CreateModel("tp", {"2x0e", "2x0e", "2x0e"}, std::nullopt, 1).ok());
  {
    grpc::ClientContext context;
    tp::v1::ListModelsResponse list;
    ASSERT_TRUE(stubs.models->ListModels(&context, {}, &list).ok());
    ASSERT_EQ(list.models_size(), 2);
    EXPECT_EQ(list.models(0).name(), "qm9");
    EXPECT_EQ(list.models(0).kind(), "qm9");
    EXPECT_EQ(list.models(1).kind(), "tp");
    EXPECT_FALSE(list.models(1).has_qm9());
  }

  const nn::data::LabeledBatch batch = Batch(11);
  std::vector<double> parameters = network.InitialParameters(7), velocity;
  tp::v1::PredictResponse predicted;
  ASSERT_TRUE(Predict(stubs, PredictRequest("qm9", batch.graphs), &predicted).ok());
  ASSERT_EQ(predicted.outputs().shape_size(), 2);
  EXPECT_EQ(predicted.outputs().shape(0), 27);
  EXPECT_EQ(predicted.outputs().shape(1), 4);
  EXPECT_EQ(predicted.model_version(), 1u);
  ExpectNear(wire::TensorToDoubles(predicted.outputs()), *network.Predict(parameters, batch.graphs), 1e-12);

  // Training on one batch lowers its loss; every step is the library's step, version after version.
  std::vector<double> losses;
  for (int step = 0; step < 12; ++step) {
    tp::v1::TrainStepResponse trained;
    grpc::Status status = Train(stubs, TrainRequest("qm9", batch), &trained);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(trained.model_version(), 2u + step);
    nn::LossAndGradient<double> want = *network.LossGradient(parameters, batch.graphs, batch.targets);
    EXPECT_NEAR(trained.loss(), want.loss, 1e-10 * (1 + want.loss));
    nn::SgdMomentumStep(parameters, velocity, want.gradient, {1e-2, 0.9});
    losses.push_back(trained.loss());
  }
  EXPECT_LT(losses.back(), 0.8 * losses.front()) << "first " << losses.front() << ", last " << losses.back();
  ASSERT_TRUE(Predict(stubs, PredictRequest("qm9", batch.graphs), &predicted).ok());
  EXPECT_EQ(predicted.model_version(), 13u);
  ExpectNear(wire::TensorToDoubles(predicted.outputs()), *network.Predict(parameters, batch.graphs), 1e-9);

  // Float32 outputs on request; delete frees the name.
  tp::v1::PredictRequest f32 = PredictRequest("qm9", batch.graphs);
  f32.set_output_dtype(tp::v1::DTYPE_FLOAT32);
  ASSERT_TRUE(Predict(stubs, f32, &predicted).ok());
  EXPECT_EQ(predicted.outputs().dtype(), tp::v1::DTYPE_FLOAT32);
  {
    grpc::ClientContext context;
    tp::v1::DeleteModelRequest request;
    request.set_name("qm9");
    tp::v1::DeleteModelResponse response;
    ASSERT_TRUE(stubs.models->DeleteModel(&context, request, &response).ok());
  }
  EXPECT_EQ(Predict(stubs, PredictRequest("qm9", batch.graphs), &predicted).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(CreateQm9(stubs, "qm9", 8, &info).ok());
}

TEST(NetworkModelTest, BadGraphsAndLimits_AreInvalidArgumentNamingWhatIsWrong) {
  server::CoreConfig config;
  config.max_graph_nodes = 200;
  config.max_graph_edges = 300;
  auto server = TestServer::Start(config);
  ASSERT_NE(server, nullptr);
  Stubs stubs(server->target());
  tp::v1::ModelInfo info;
  ASSERT_TRUE(CreateQm9(stubs, "m", 1, &info).ok());
  const nn::data::LabeledBatch batch = Batch(3, 5);
  ASSERT_LT(batch.graphs.num_nodes(), 200);
  ASSERT_LT(batch.graphs.num_edges(), 300);
  tp::v1::PredictResponse response;
  ASSERT_TRUE(Predict(stubs, PredictRequest("m", batch.graphs), &response).ok());

  auto expect_invalid = [&](const nn::GraphBatch& graphs, const std::string& words) {
    grpc::Status status = Predict(stubs, PredictRequest("m", graphs), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << words;
    EXPECT_NE(status.error_message().find(words), std::string::npos) << status.error_message();
  };
  nn::GraphBatch bad = batch.graphs;
  bad.edge_dst[3] = static_cast<int32_t>(bad.num_nodes()) + 5;
  expect_invalid(bad, "edge");
  bad = batch.graphs;
  bad.positions[7] = std::nan("");
  expect_invalid(bad, "position");
  bad = batch.graphs;
  bad.species[2] = 9;
  expect_invalid(bad, "species");
  bad = batch.graphs;
  bad.graph_index[4] = 17;
  expect_invalid(bad, "graph");
  nn::data::LabeledBatch big = Batch(4, 14);
  ASSERT_GT(big.graphs.num_nodes(), 200);
  expect_invalid(big.graphs, "max_graph_nodes 200");
  nn::GraphBatch many_edges = batch.graphs;
  while (many_edges.num_edges() <= 300) {
    many_edges.edge_src.insert(many_edges.edge_src.end(), batch.graphs.edge_src.begin(), batch.graphs.edge_src.end());
    many_edges.edge_dst.insert(many_edges.edge_dst.end(), batch.graphs.edge_dst.begin(), batch.graphs.edge_dst.end());
  }
  expect_invalid(many_edges, "max_graph_edges 300");

  // Wire-level mistakes: a float species tensor, edge_index of the wrong rank, bytes short.
  tp::v1::PredictRequest wire = PredictRequest("m", batch.graphs);
  wire.mutable_graphs()->mutable_species()->set_dtype(tp::v1::DTYPE_FLOAT32);
  grpc::Status status = Predict(stubs, wire, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("graphs.species"), std::string::npos) << status.error_message();
  wire = PredictRequest("m", batch.graphs);
  wire.mutable_graphs()->mutable_edge_index()->clear_shape();
  wire.mutable_graphs()->mutable_edge_index()->add_shape(2 * batch.graphs.num_edges());
  status = Predict(stubs, wire, &response);
  EXPECT_NE(status.error_message().find("graphs.edge_index: expected shape [2, num_edges]"), std::string::npos)
      << status.error_message();
  wire = PredictRequest("m", batch.graphs);
  wire.mutable_graphs()->mutable_positions()->mutable_data()->resize(8);
  status = Predict(stubs, wire, &response);
  EXPECT_NE(status.error_message().find("graphs.positions"), std::string::npos) << status.error_message();

  // TrainStep: targets of the wrong shape, a bad momentum; the model stays at version 1.
  tp::v1::TrainStepRequest train = TrainRequest("m", batch);
  train.mutable_targets()->set_shape(1, 3);
  tp::v1::TrainStepResponse trained;
  status = Train(stubs, train, &trained);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("targets: expected shape [5, 4]"), std::string::npos) << status.error_message();
  train = TrainRequest("m", batch);
  train.set_momentum(1.5);
  status = Train(stubs, train, &trained);
  EXPECT_NE(status.error_message().find("momentum"), std::string::npos) << status.error_message();
  train = TrainRequest("m", batch);
  train.set_learning_rate(0);
  status = Train(stubs, train, &trained);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("learning_rate"), std::string::npos) << status.error_message();
  EXPECT_EQ(server->core().GetModel("m")->version, 1u);
}

TEST(NetworkModelTest, UnknownModelAndWrongKind_NameTheKind) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  Stubs stubs(server->target());
  tp::v1::ModelInfo info;
  ASSERT_TRUE(CreateQm9(stubs, "net", 1, &info).ok());
  ASSERT_TRUE(server->core().CreateModel("tp", {"2x0e", "2x0e", "2x0e"}, std::nullopt, 1).ok());
  const nn::data::LabeledBatch batch = Batch(5, 3);
  tp::v1::PredictResponse response;
  EXPECT_EQ(Predict(stubs, PredictRequest("nope", batch.graphs), &response).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::Status status = Predict(stubs, PredictRequest("tp", batch.graphs), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("tensor-product model (kind tp)"), std::string::npos) << status.error_message();
  tp::v1::TrainStepResponse trained;
  EXPECT_EQ(Train(stubs, TrainRequest("tp", batch), &trained).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  // Forward on the network model.
  tp::v1::ForwardRequest forward;
  forward.set_model("net");
  *forward.mutable_x1() = F32({1, 2}, {1, 2});
  *forward.mutable_x2() = F32({1, 2}, {1, 2});
  tp::v1::ForwardResponse forwarded;
  grpc::ClientContext context;
  status = stubs.compute->Forward(&context, forward, &forwarded);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("network model (kind qm9)"), std::string::npos) << status.error_message();
  // Names are one namespace; a qm9 header with irreps, or an upload, is refused.
  EXPECT_EQ(CreateQm9(stubs, "tp", 1, &info).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(server->core().CreateModel("net", {"2x0e", "2x0e", "2x0e"}, std::nullopt, 1).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(CreateQm9(stubs, "bad", 1, &info, /*lmax=*/7).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(NetworkModelTest, ConcurrentTrainSteps_RunOneAfterTheOther) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  Stubs stubs(server->target());
  tp::v1::ModelInfo info;
  ASSERT_TRUE(CreateQm9(stubs, "m", 3, &info).ok());
  const nn::data::LabeledBatch batch = Batch(9, 4);
  constexpr int kThreads = 4, kSteps = 3;
  std::vector<std::vector<uint64_t>> versions(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int s = 0; s < kSteps; ++s) {
        tp::v1::TrainStepResponse trained;
        if (Train(stubs, TrainRequest("m", batch), &trained).ok()) versions[t].push_back(trained.model_version());
      }
    });
  }
  // Predicts meanwhile see whole versions.
  for (int i = 0; i < 5; ++i) {
    tp::v1::PredictResponse predicted;
    ASSERT_TRUE(Predict(stubs, PredictRequest("m", batch.graphs), &predicted).ok());
    EXPECT_GE(predicted.model_version(), 1u);
  }
  for (std::thread& thread : threads) thread.join();
  std::set<uint64_t> all;
  for (const auto& v : versions) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kSteps));
  EXPECT_EQ(*all.begin(), 2u);
  EXPECT_EQ(*all.rbegin(), 1u + kThreads * kSteps);
}

class NetworkProcess : public TpserveProcess {
 public:
  NetworkProcess(const std::string& model_dir, const std::string& log)
      : TpserveProcess({TPSERVE_PATH,
                        {"--listen=127.0.0.1:0", "--metrics_address=", "--model_dir=" + model_dir, "--backend=cpu"},
                        log}) {}
};

TEST(NetworkModelTest, RestartOfTpserve_KeepsParametersAndVelocity) {
  TempDir dir;
  const std::string models = dir.path() + "/models";
  const nn::data::LabeledBatch batch = Batch(21, 6);
  std::vector<double> before;
  tp::v1::ModelInfo info_before;
  {
    NetworkProcess server(models, dir.path() + "/log.0");
    ASSERT_GT(server.port(), 0);
    Stubs stubs(server.target());
    tp::v1::ModelInfo info;
    ASSERT_TRUE(CreateQm9(stubs, "m", 5, &info).ok());
    for (int step = 0; step < 2; ++step) {
      tp::v1::TrainStepResponse trained;
      ASSERT_TRUE(Train(stubs, TrainRequest("m", batch), &trained).ok());
    }
    tp::v1::PredictResponse predicted;
    ASSERT_TRUE(Predict(stubs, PredictRequest("m", batch.graphs), &predicted).ok());
    before = wire::TensorToDoubles(predicted.outputs());
    grpc::ClientContext context;
    tp::v1::GetModelRequest get;
    get.set_name("m");
    ASSERT_TRUE(stubs.models->GetModel(&context, get, &info_before).ok());
    server.Kill9();  // the state was durable when TrainStep answered
  }
  // What is on disk: the parameters and velocity the next step must start from.
  server::ModelRepository repository(models);
  absl::StatusOr<server::RepositoryContents> stored = repository.Scan();
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->networks.size(), 1u);
  std::vector<double> parameters = stored->networks[0].parameters, velocity = stored->networks[0].velocity;
  EXPECT_EQ(stored->networks[0].version, 3u);
  double velocity_norm = 0;
  for (double v : velocity) velocity_norm += v * v;
  EXPECT_GT(velocity_norm, 0) << "two steps leave a non-zero momentum";

  NetworkProcess server(models, dir.path() + "/log.1");
  ASSERT_GT(server.port(), 0);
  Stubs stubs(server.target());
  tp::v1::ModelInfo info;
  grpc::ClientContext context;
  tp::v1::GetModelRequest get;
  get.set_name("m");
  ASSERT_TRUE(stubs.models->GetModel(&context, get, &info).ok());
  EXPECT_EQ(info.kind(), "qm9");
  EXPECT_EQ(info.version(), info_before.version());
  EXPECT_EQ(info.weights_fnv1a64(), info_before.weights_fnv1a64());
  EXPECT_EQ(info.qm9().mul(), kMul);
  tp::v1::PredictResponse predicted;
  ASSERT_TRUE(Predict(stubs, PredictRequest("m", batch.graphs), &predicted).ok());
  EXPECT_EQ(wire::TensorToDoubles(predicted.outputs()), before);
  // The next step continues with the stored velocity: the library's step from the disk state.
  tp::v1::TrainStepResponse trained;
  ASSERT_TRUE(Train(stubs, TrainRequest("m", batch), &trained).ok());
  CpuBackend backend(CpuBackendOptions{1});
  nn::Qm9Network network = LibraryNetwork(&backend);
  nn::LossAndGradient<double> step = *network.LossGradient(parameters, batch.graphs, batch.targets);
  nn::SgdMomentumStep(parameters, velocity, step.gradient, {1e-2, 0.9});
  ASSERT_TRUE(Predict(stubs, PredictRequest("m", batch.graphs), &predicted).ok());
  ExpectNear(wire::TensorToDoubles(predicted.outputs()), *network.Predict(parameters, batch.graphs), 1e-10);
}

TEST(NetworkModelTest, RepositoryState_RoundTripsAndDamageIsNamed) {
  TempDir dir;
  server::ModelRepository repository(dir.path());
  ASSERT_TRUE(repository.Init().ok());
  server::StoredNetwork network{"n", {2, 8, 3, 5, 4}, 1, {1.5, -2.25, 3.0}, {0.0, 0.0, 0.0}};
  ASSERT_TRUE(repository.CreateNetwork(network).ok());
  ASSERT_EQ(repository.CreateNetwork(network).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(repository.WriteNetworkState("n", network.spec, 2, {1.0, 2.0, 3.0}, {0.5, -0.5, 0.25}).ok());
  absl::StatusOr<server::RepositoryContents> contents = repository.Scan();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->networks.size(), 1u);
  EXPECT_TRUE(contents->models.empty());
  const server::StoredNetwork& loaded = contents->networks[0];
  EXPECT_EQ(loaded.version, 2u);
  EXPECT_TRUE(loaded.spec == network.spec);
  EXPECT_EQ(loaded.parameters, (std::vector<double>{1.0, 2.0, 3.0}));
  EXPECT_EQ(loaded.velocity, (std::vector<double>{0.5, -0.5, 0.25}));
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/n/state-v1.bin")) << "the old state is unlinked";

  // A flipped byte fails the checksum, named with its file; the server refuses to start.
  {
    std::fstream state(dir.path() + "/n/state-v2.bin", std::ios::in | std::ios::out | std::ios::binary);
    state.seekp(9);
    state.put('\x7f');
  }
  contents = repository.Scan();
  ASSERT_TRUE(contents.ok());
  ASSERT_EQ(contents->damaged.size(), 1u);
  EXPECT_NE(contents->damaged[0].why.message().find("state-v2.bin fails its checksum"), std::string::npos)
      << contents->damaged[0].why;
  server::CoreConfig config;
  config.model_dir = dir.path();
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(std::make_unique<CpuBackend>(CpuBackendOptions{1}));
  auto refused = server::InferenceCore::Create(config, std::move(backends), nullptr,
                                               std::make_unique<CpuBackend>(CpuBackendOptions{1}));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss);
  // Parameters that do not fit the spec are damage too (3 stored, the network needs many more).
  ASSERT_TRUE(repository.Remove("n").ok());
  ASSERT_TRUE(repository.CreateNetwork(network).ok());
  backends.clear();
  backends.push_back(std::make_unique<CpuBackend>(CpuBackendOptions{1}));
  refused = server::InferenceCore::Create(config, std::move(backends), nullptr,
                                          std::make_unique<CpuBackend>(CpuBackendOptions{1}));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(refused.status().message().find("3 parameters on disk"), std::string::npos) << refused.status();
}

}  // namespace
}  // namespace tpserve::testing
