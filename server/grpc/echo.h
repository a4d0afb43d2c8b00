// Echo's answer (tp.v1 Echo, unary and on a Stream alike).
#pragma once

#include "absl/status/status.h"
#include "server/core/memory_budget.h"
#include "server/grpc/rpc_scope.h"
#include "tp/v1/tensor_product.pb.h"

namespace tpserve::server {

// Echo's response_bytes: a negative count used to be taken as 0 (echo the payload) without a word.
inline constexpr char kNegativeResponseBytes[] = "response_bytes: expected >= 0 (0: echo the payload)";

// Echo's answer, sized within the message limit before anything is allocated. `memory` holds its
// bytes of the server's budget until the answer is sent. `request`'s payload may be moved out.
absl::Status AnswerEcho(const ServiceEnv& env, tp::v1::EchoRequest* request, tp::v1::EchoResponse* response,
                        MemoryBudget::Reservation* memory);

}  // namespace tpserve::server
