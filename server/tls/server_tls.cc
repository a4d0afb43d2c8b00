#include "server/tls/server_tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "absl/strings/str_cat.h"

namespace tpserve::server {

void SslCtxDeleter::operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }

std::string TakeSslErrors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    absl::StrAppend(&text, text.empty() ? "" : "; ", buffer);
  }
  return text.empty() ? "unknown OpenSSL error" : text;
}

absl::StatusOr<SslContext> MakeServerSslContext(const std::string& cert_file, const std::string& key_file) {
  ERR_clear_error();
  SslContext ctx(SSL_CTX_new(TLS_server_method()), SslCtxDeleter());
  if (ctx == nullptr) return absl::InternalError(absl::StrCat("TLS context: ", TakeSslErrors()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_file.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate ", cert_file, ": expected a PEM certificate chain (", TakeSslErrors(), ")"));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat("TLS key ", key_file, " does not belong to the certificate in ", cert_file));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("TLS key ", key_file, ": expected a PEM private key (", TakeSslErrors(), ")"));
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS key ", key_file, " does not belong to the certificate in ", cert_file));
  }
  return ctx;
}

absl::Status CheckCertificateAndKey(const std::string& cert_file, const std::string& key_file) {
  return MakeServerSslContext(cert_file, key_file).status();
}

}  // namespace tpserve::server
