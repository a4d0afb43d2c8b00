// Requests that do not parse are INVALID_ARGUMENT, on every tp.v1 method alike.
//
// gRPC's generated synchronous handlers parse a request before the service's code runs and answer
// one that does not parse with INTERNAL (protobuf's SerializationTraits), and a streaming Read()
// that fails to parse looks like the end of the stream (a Stream or an upload cut short by a bad
// message would end OK). So the tp.v1 methods are registered by hand (sync_methods.h: the generated
// services' names and wire messages) with
//   - Parsed<M> as the request type of unary and server-streaming methods: its SerializationTraits
//     parse M and keep a failure as INVALID_ARGUMENT naming the message type, which the handler
//     answers after the token check, counted in the metrics like any call (RejectUnparsed);
//   - grpc::ByteBuffer as what client- and bidi-streams read, parsed by ReadMessage(), which tells
//     the end of the stream from a message that does not parse.
#pragma once

#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/impl/serialization_traits.h"
#include "grpcpp/support/sync_stream.h"
#include "grpcpp/support/status.h"
#include "server/grpc/rpc_scope.h"

namespace tpserve::server {

template <typename M>
struct Parsed {
  M message;
  grpc::Status status;  // INVALID_ARGUMENT when the bytes were not an M
};

// INVALID_ARGUMENT naming M's type and the size when `buffer` (consumed) is not an M.
template <typename M>
grpc::Status ParseRequest(grpc::ByteBuffer* buffer, M* message) {
  const size_t bytes = buffer->Length();
  grpc::Status status = grpc::SerializationTraits<M>::Deserialize(buffer, message);
  if (status.ok()) return status;
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat("the request's ", bytes, " bytes are not a ", message->GetTypeName()));
}

}  // namespace tpserve::server

namespace grpc {

template <typename M>
class SerializationTraits<tpserve::server::Parsed<M>, void> {
 public:
  // Always OK: a failure is kept in `parsed->status` for the handler (gRPC would answer it itself,
  // before the token check and unseen by the metrics).
  static Status Deserialize(ByteBuffer* buffer, tpserve::server::Parsed<M>* parsed) {
    if (buffer == nullptr || !buffer->Valid()) {
      parsed->status = Status(StatusCode::INVALID_ARGUMENT,
                              absl::StrCat("no request message; expected a ", parsed->message.GetTypeName()));
    } else {
      parsed->status = tpserve::server::ParseRequest(buffer, &parsed->message);
    }
    return Status::OK;
  }
};

}  // namespace grpc

namespace tpserve::server {

// Reads the next message of a client or bidi stream. true: `message` holds it. false: the stream
// ended (`*error` OK) or the message did not parse (`*error` INVALID_ARGUMENT).
template <typename M, typename Reader>
bool ReadMessage(Reader* reader, M* message, grpc::Status* error) {
  *error = grpc::Status::OK;
  grpc::ByteBuffer buffer;
  if (!reader->Read(&buffer)) return false;
  message->Clear();
  *error = ParseRequest(&buffer, message);
  return error->ok();
}

// Answers a request that did not parse (`status`) as a call of `method` ("GetModel"): the token
// is checked first, and the call is counted.
inline grpc::Status RejectUnparsed(const ServiceEnv& env, const char* method, grpc::ServerContext* context,
                                   const grpc::Status& status) {
  RpcScope scope(env, method, context);
  if (auto s = scope.Authorize(); !s.ok()) return scope.Finish(s);
  return scope.Finish(status);
}

// "GetModel" of "/tp.v1.ModelService/GetModel" (a path of MethodPath: it outlives the server).
inline const char* ShortMethodName(const char* name) {
  const char* slash = std::strrchr(name, '/');
  return slash != nullptr ? slash + 1 : name;
}

}  // namespace tpserve::server
