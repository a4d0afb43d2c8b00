// Forward's messages in protobuf wire format, read and written around the tensors' bytes: the
// request's x1/x2 bytes are located in gRPC's receive buffer (not copied into a message) so that
// they can go straight into page-locked memory, and the response's out bytes are sent from where
// the device wrote them. Everything else keeps protobuf's meaning: the parser accepts only the
// plain encoding (what every protobuf library writes) and answers false for anything else, which
// the caller then parses with protobuf itself.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "tp/v1/tensor_product.pb.h"

namespace tpserve::wire {

// `size` bytes starting at byte `offset` of a message held in pieces.
struct WireBytes {
  size_t offset = 0;
  size_t size = 0;
};

// A ForwardRequest whose x1.data and x2.data are located instead of copied (header has them empty).
struct ForwardRequestView {
  tp::v1::ForwardRequest header;
  WireBytes x1_data, x2_data;
};

// The message is the concatenation of `pieces`. True, with `view` filled, when it is a valid
// ForwardRequest in which x1 and x2 each occur at most once, every field has its declared wire
// type and no field is unknown; false otherwise (the message may still be valid: parse it with
// protobuf then, which merges repeated messages and keeps unknown fields).
bool ParseForwardRequest(absl::Span<const absl::string_view> pieces, ForwardRequestView* view);

// Copies the located bytes out of the pieces.
void CopyWireBytes(absl::Span<const absl::string_view> pieces, WireBytes bytes, void* dst);

// The encoding of `fields` (whose out.data must be empty) followed by the key and length of an
// out.data of `data_bytes` bytes: append those bytes and the whole is the ForwardResponse with
// that data (out is written last, which protobuf readers accept in any order).
std::string EncodeForwardResponseHead(const tp::v1::ForwardResponse& fields, size_t data_bytes);

// Any message split at its top level around one length-delimited field (the Open Inference
// Protocol's raw_input_contents, kserve_service.h): each occurrence of `field` is located in
// `occurrences`, in order, and every other field is copied, in order, into `rest`, which then
// parses as the message without that field. False when the top level is not well-formed wire
// data or `field` occurs with another wire type (the caller then lets protobuf answer).
bool SplitOutField(absl::Span<const absl::string_view> pieces, int field, std::string* rest,
                   std::vector<WireBytes>* occurrences);

}  // namespace tpserve::wire
