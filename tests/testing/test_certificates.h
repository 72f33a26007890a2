// Certificates for TLS tests, made by the openssl CLI (the reference tool, not our code) in a temporary
// directory: a CA and three certificates it signed (a server's for 127.0.0.1/localhost, a client's and a
// cluster member's usable both ways), and a second CA with a certificate of its own that the first
// must not trust. Files: ca.pem, server.pem/.key, client.pem/.key, member.pem/.key (signed by ca.pem),
// other-ca.pem, intruder.pem/.key (signed by other-ca.pem).
// Ownership: the directory lives as long as the object.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace tandem::testing {

class TestCertificates {
 public:
  TestCertificates() {
    char tmpl[] = "/tmp/tandem-certs-XXXXXX";
    const char* made = mkdtemp(tmpl);
    if (made == nullptr) return;
    dir_ = made;
    const std::string sign = " -CA ca.pem -CAkey ca.key -CAcreateserial -days 1";
    auto leaf = [&](const std::string& name, const std::string& cn, const std::string& ca_files, const std::string& ext) {
      return " && openssl req -newkey rsa:2048 -nodes -subj /CN=" + cn + " -keyout " + name + ".key -out " + name +
             ".csr && openssl x509 -req -in " + name + ".csr" + ca_files + ext + " -out " + name + ".pem";
    };
    const std::string command =
        "(cd " + dir_ + " && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext" +
        " && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=tandem-test-ca -keyout ca.key -out ca.pem" +
        " && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other-ca -keyout other-ca.key -out other-ca.pem" +
        leaf("server", "localhost", sign, " -extfile san.ext") + leaf("client", "client", sign, "") +
        leaf("member", "tandem-member", sign, " -extfile san.ext") +
        leaf("intruder", "intruder", " -CA other-ca.pem -CAkey other-ca.key -CAcreateserial -days 1", "") +
        ") >/dev/null 2>&1";
    ok_ = std::system(command.c_str()) == 0 && std::filesystem::exists(dir_ + "/intruder.pem");
  }
  ~TestCertificates() {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  TestCertificates(const TestCertificates&) = delete;
  TestCertificates& operator=(const TestCertificates&) = delete;

  bool ok() const { return ok_; }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
  bool ok_ = false;
};

}  // namespace tandem::testing
