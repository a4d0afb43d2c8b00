// TLS material a server loads from PEM files, checked with OpenSSL before it is used: the
// certificate chain parses, the private key parses and belongs to the certificate. Used by the
// /metrics endpoint (HTTPS) and by the gRPC server's certificate reload (SIGHUP), so that a broken
// or mismatched pair is refused with a message and the previous one stays in use.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace tpserve::server {

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const;
};
using SslContext = std::shared_ptr<SSL_CTX>;

// INVALID_ARGUMENT naming the file and what is wrong unless `cert_file` holds a PEM certificate
// chain and `key_file` its PEM private key.
absl::Status CheckCertificateAndKey(const std::string& cert_file, const std::string& key_file);

// A TLS 1.2+ server context serving that certificate (checked as above).
absl::StatusOr<SslContext> MakeServerSslContext(const std::string& cert_file, const std::string& key_file);

// The OpenSSL error queue as one line (emptied), for messages.
std::string TakeSslErrors();

}  // namespace tpserve::server
