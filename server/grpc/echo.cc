#include "server/grpc/echo.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace tpserve::server {

absl::Status AnswerEcho(const ServiceEnv& env, tp::v1::EchoRequest* request, tp::v1::EchoResponse* response,
                        MemoryBudget::Reservation* memory) {
  // Room for the response's framing (tag, length) inside one message.
  const int64_t max_payload = std::max<int64_t>(0, env.max_message_bytes - 64);
  const int64_t bytes = request->response_bytes() > 0 ? request->response_bytes()
                                                      : static_cast<int64_t>(request->payload().size());
  if (request->response_bytes() < 0 || bytes > max_payload) {
    return absl::InvalidArgumentError(absl::StrCat("response_bytes ", request->response_bytes(),
                                                   ": expected 0 (echo the payload) to ", max_payload,
                                                   " (the server's max_message_bytes less framing)"));
  }
  if (request->response_bytes() > 0) {
    absl::StatusOr<MemoryBudget::Reservation> reserved = env.core->memory_budget().Reserve(bytes, "an Echo");
    if (!reserved.ok()) return reserved.status();
    *memory = *std::move(reserved);
    response->mutable_payload()->assign(static_cast<size_t>(bytes), '\0');
  } else {
    *response->mutable_payload() = std::move(*request->mutable_payload());
  }
  return absl::OkStatus();
}

}  // namespace tpserve::server
