// How tpserve's services register their methods with gRPC: synchronous handlers, registered by
// hand, all of them here. The one file a gRPC upgrade may touch.
//
// Why not the generated service classes: gRPC's generated code offers no synchronous raw
// (ByteBuffer) method. WithRawMethod_X is the asynchronous API (a completion-queue loop of our
// own), and WithRawCallbackMethod_X the callback API, and a server with any callback-API method
// answers its synchronous unary calls 0.1-0.15 ms slower (compute_service.h, measured on the H100
// host). Two things need the bytes:
//   - Forward and ModelInfer are served from the message's bytes: tensors go from gRPC's receive
//     buffer straight into page-locked memory the device copies from, and `out` is sent from the
//     buffer the device wrote (forward_wire.h);
//   - a request that does not parse is INVALID_ARGUMENT, answered after the token check and
//     counted in the metrics (request_parsing.h); the generated handler answers INTERNAL itself.
// So the handlers are the ones the generated code instantiates (grpc::internal::RpcMethodHandler
// and its streaming siblings, from grpcpp/support/method_handler.h), given the request types of
// request_parsing.h. Method paths come from the generated code (MethodPath), never from literals.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>

#include "google/protobuf/descriptor.h"
#include "grpcpp/impl/rpc_service_method.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/method_handler.h"
#include "grpcpp/support/sync_stream.h"
#include "server/grpc/request_parsing.h"

namespace tpserve::server {

// The path gRPC routes `method` of `GeneratedService` by ("/tp.v1.ModelService/GetModel"): the
// generated service's full name, and `method` as its generated descriptor declares it. A method
// the proto does not declare stops the server at start-up, naming it. The path lives as long as
// the process (gRPC keeps the pointer).
template <typename GeneratedService>
const char* MethodPath(const char* method) {
  const char* service_name = GeneratedService::service_full_name();
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service_name);
  if (service == nullptr || service->FindMethodByName(method) == nullptr) {
    std::fprintf(stderr, "tpserve: %s has no method %s in its generated descriptor\n", service_name, method);
    std::abort();
  }
  static std::mutex mu;
  static std::set<std::string>* paths = new std::set<std::string>();  // never freed: gRPC keeps pointers
  std::lock_guard<std::mutex> lock(mu);
  return paths->insert(std::string("/") + service_name + "/" + method).first->c_str();
}

// A unary method served from the request's bytes into the response's bytes.
template <typename Service>
grpc::internal::RpcServiceMethod* RawUnaryMethod(
    const char* path, Service* service,
    grpc::Status (Service::*method)(grpc::ServerContext*, const grpc::ByteBuffer*, grpc::ByteBuffer*)) {
  return new grpc::internal::RpcServiceMethod(
      path, grpc::internal::RpcMethod::NORMAL_RPC,
      new grpc::internal::RpcMethodHandler<Service, grpc::ByteBuffer, grpc::ByteBuffer>(
          [method](Service* self, grpc::ServerContext* context, const grpc::ByteBuffer* request,
                   grpc::ByteBuffer* response) { return (self->*method)(context, request, response); },
          service));
}

// A unary method whose request gRPC parses (as the generated handler would: one that does not parse
// is answered by gRPC). For methods of protocols whose errors are theirs (the KServe service).
template <typename Service, typename Request, typename Response>
grpc::internal::RpcServiceMethod* PlainUnaryMethod(
    const char* path, Service* service,
    grpc::Status (Service::*method)(grpc::ServerContext*, const Request*, Response*)) {
  using Message = grpc::protobuf::MessageLite;
  return new grpc::internal::RpcServiceMethod(
      path, grpc::internal::RpcMethod::NORMAL_RPC,
      new grpc::internal::RpcMethodHandler<Service, Request, Response, Message, Message>(
          [method](Service* self, grpc::ServerContext* context, const Request* request, Response* response) {
            return (self->*method)(context, request, response);
          },
          service));
}

// A unary method whose request is parsed as Parsed<Request> (request_parsing.h): one that does
// not parse is INVALID_ARGUMENT, after the token check, counted. `env` outlives the service.
template <typename Service, typename Request, typename Response>
grpc::internal::RpcServiceMethod* UnaryMethod(const char* path, Service* service, const ServiceEnv* env,
                                              grpc::Status (Service::*method)(grpc::ServerContext*, const Request*,
                                                                               Response*)) {
  return new grpc::internal::RpcServiceMethod(
      path, grpc::internal::RpcMethod::NORMAL_RPC,
      new grpc::internal::RpcMethodHandler<Service, Parsed<Request>, Response>(
          [method, env, short_name = ShortMethodName(path)](Service* self, grpc::ServerContext* context,
                                                              const Parsed<Request>* request, Response* response) {
            if (!request->status.ok()) return RejectUnparsed(*env, short_name, context, request->status);
            return (self->*method)(context, &request->message, response);
          },
          service));
}

// Client streams read raw messages (ReadMessage tells a bad message from the end of the stream).
template <typename Service, typename Response>
grpc::internal::RpcServiceMethod* ClientStreamingMethod(
    const char* path, Service* service,
    grpc::Status (Service::*method)(grpc::ServerContext*, grpc::ServerReader<grpc::ByteBuffer>*, Response*)) {
  return new grpc::internal::RpcServiceMethod(
      path, grpc::internal::RpcMethod::CLIENT_STREAMING,
      new grpc::internal::ClientStreamingHandler<Service, grpc::ByteBuffer, Response>(
          [method](Service* self, grpc::ServerContext* context, grpc::ServerReader<grpc::ByteBuffer>* reader,
                   Response* response) { return (self->*method)(context, reader, response); },
          service));
}

template <typename Service, typename Request, typename Response>
grpc::internal::RpcServiceMethod* ServerStreamingMethod(
    const char* path, Service* service, const ServiceEnv* env,
    grpc::Status (Service::*method)(grpc::ServerContext*, const Request*, grpc::ServerWriter<Response>*)) {
  return new grpc::internal::RpcServiceMethod(
      path, grpc::internal::RpcMethod::SERVER_STREAMING,
      new grpc::internal::ServerStreamingHandler<Service, Parsed<Request>, Response>(
          [method, env, short_name = ShortMethodName(path)](Service* self, grpc::ServerContext* context,
                                                              const Parsed<Request>* request,
                                                              grpc::ServerWriter<Response>* writer) {
            if (!request->status.ok()) return RejectUnparsed(*env, short_name, context, request->status);
            return (self->*method)(context, &request->message, writer);
          },
          service));
}

// Bidi streams reading `Request` (grpc::ByteBuffer: parsed by the handler with ReadMessage).
template <typename Service, typename Request, typename Response>
grpc::internal::RpcServiceMethod* BidiStreamingMethod(
    const char* path, Service* service,
    grpc::Status (Service::*method)(grpc::ServerContext*, grpc::ServerReaderWriter<Response, Request>*)) {
  return new grpc::internal::RpcServiceMethod(
      path, grpc::internal::RpcMethod::BIDI_STREAMING,
      new grpc::internal::BidiStreamingHandler<Service, Request, Response>(
          [method](Service* self, grpc::ServerContext* context, grpc::ServerReaderWriter<Response, Request>* stream) {
            return (self->*method)(context, stream);
          },
          service));
}

}  // namespace tpserve::server
