// grpc-echo-probe: gRPC alone, for tuning the transport. A bare TensorProductService whose Echo
// answers `response_bytes` zeros, and a client timing unary Echo calls back to back; both ends take
// the same integer channel arguments, so default and tuned transports can be compared:
//
//   grpc-echo-probe server 127.0.0.1:52001 [ARG VALUE]... &
//   grpc-echo-probe client 127.0.0.1:52001 [ARG VALUE]...   (REQUEST_BYTES, RESPONSE_BYTES, CALLS)
//
// SERVICE picks the server's shape (sync, sync+callback-stream, callback). Prints p50 / p90 / min in ms and the process's minor page faults. The seed model's sizes (590 KB
// in, 295 KB out) are the default.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "wire/malloc_tuning.h"
#include "tp/v1/tensor_product.grpc.pb.h"

namespace {

class EchoOnly : public tp::v1::TensorProductService::Service {
  grpc::Status Echo(grpc::ServerContext*, const tp::v1::EchoRequest* request, tp::v1::EchoResponse* response) override {
    response->mutable_payload()->assign(static_cast<size_t>(request->response_bytes()), '\0');
    return grpc::Status::OK;
  }
};

// The same sync Echo in a service that also has a callback-API method (as tpserve's Stream is).
class EchoWithCallbackStream final : public tp::v1::TensorProductService::WithCallbackMethod_Stream<EchoOnly> {
  grpc::ServerBidiReactor<tp::v1::StreamRequest, tp::v1::StreamResponse>* Stream(
      grpc::CallbackServerContext*) override {
    return nullptr;  // never called
  }
};

// Echo itself on the callback API, answered inline.
class CallbackEcho final : public tp::v1::TensorProductService::WithCallbackMethod_Echo<EchoOnly> {
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context, const tp::v1::EchoRequest* request,
                                 tp::v1::EchoResponse* response) override {
    response->mutable_payload()->assign(static_cast<size_t>(request->response_bytes()), '\0');
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

long EnvOr(const char* name, long fallback) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::atol(value) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || (std::string(argv[1]) != "server" && std::string(argv[1]) != "client") || argc % 2 != 1) {
    std::fprintf(stderr, "usage: grpc-echo-probe server|client HOST:PORT [ARG VALUE]...\n");
    return 2;
  }
  // MALLOC=default leaves glibc as it is, to measure what KeepLargeBuffersInTheHeap() changes.
  const char* malloc_mode = std::getenv("MALLOC");
  if (malloc_mode == nullptr || std::string(malloc_mode) != "default") tpserve::KeepLargeBuffersInTheHeap();
  std::vector<std::pair<std::string, int>> args;
  for (int i = 3; i + 1 < argc; i += 2) args.emplace_back(argv[i], std::atoi(argv[i + 1]));
  if (std::string(argv[1]) == "server") {
    // SERVICE=sync (default) | sync+callback-stream | callback
    const std::string kind = std::getenv("SERVICE") != nullptr ? std::getenv("SERVICE") : "sync";
    std::unique_ptr<grpc::Service> service_owner;
    if (kind == "sync+callback-stream") {
      service_owner = std::make_unique<EchoWithCallbackStream>();
    } else if (kind == "callback") {
      service_owner = std::make_unique<CallbackEcho>();
    } else {
      service_owner = std::make_unique<EchoOnly>();
    }
    grpc::Service& service = *service_owner;
    grpc::ServerBuilder builder;
    builder.AddListeningPort(argv[2], grpc::InsecureServerCredentials());
    builder.SetMaxReceiveMessageSize(1 << 30);
    builder.SetMaxSendMessageSize(1 << 30);
    for (const auto& [name, value] : args) builder.AddChannelArgument(name, value);
    builder.RegisterService(&service);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (!server) return 1;
    server->Wait();
    return 0;
  }
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(1 << 30);
  channel_args.SetMaxSendMessageSize(1 << 30);
  for (const auto& [name, value] : args) channel_args.SetInt(name, value);
  auto stub = tp::v1::TensorProductService::NewStub(
      grpc::CreateCustomChannel(argv[2], grpc::InsecureChannelCredentials(), channel_args));
  tp::v1::EchoRequest request;
  request.set_payload(std::string(static_cast<size_t>(EnvOr("REQUEST_BYTES", 589862)), 'x'));
  request.set_response_bytes(EnvOr("RESPONSE_BYTES", 294936));
  const long calls = EnvOr("CALLS", 1000);
  std::vector<double> ms;
  for (long i = 0; i < 30 + calls; ++i) {
    grpc::ClientContext context;
    tp::v1::EchoResponse response;
    auto start = std::chrono::steady_clock::now();
    grpc::Status status = stub->Echo(&context, request, &response);
    double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (!status.ok()) {
      std::fprintf(stderr, "grpc-echo-probe: %s\n", status.error_message().c_str());
      return 1;
    }
    if (i >= 30) ms.push_back(elapsed);
  }
  std::sort(ms.begin(), ms.end());
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("p50 %.3f ms  p90 %.3f ms  min %.3f ms  (%ld calls; client minor faults %ld)\n", ms[ms.size() / 2],
              ms[ms.size() * 9 / 10], ms.front(), calls, usage.ru_minflt);
  return 0;
}
