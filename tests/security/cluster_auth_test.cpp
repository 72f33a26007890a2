// The cluster key's challenge-response (security/cluster_auth.h) on socket pairs: matching keys pass
// on both sides, a wrong key, a keyless peer, junk, silence and a reflected proof all fail; with key
// lists, each step of a rotation interoperates with the step before and after it; the frame parser and
// the key file loader refuse what they must.
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <vector>

#include "common/socket.h"
#include "security/cluster_auth.h"

namespace tandem::security {
namespace {

const std::string kKey = "0123456789abcdef0123456789abcdef";

struct Pair {
  int dialer = -1, acceptor = -1;
  Pair() {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0) dialer = fds[0], acceptor = fds[1];
  }
  ~Pair() {
    if (dialer >= 0) close(dialer);
    if (acceptor >= 0) close(acceptor);
  }
};

// Runs both sides at once; each side closes its end when it fails, as the planes do.
std::pair<Status, Status> handshake(const ClusterKeys& dialer_key, const ClusterKeys& acceptor_key) {
  Pair p;
  auto acceptor = std::async(std::launch::async, [&] {
    Status s = authenticate_acceptor(p.acceptor, acceptor_key, "test", "dialer", 2000);
    if (!s.ok()) shutdown(p.acceptor, SHUT_RDWR);
    return s;
  });
  Status d = authenticate_dialer(p.dialer, dialer_key, "test", "acceptor", 2000);
  if (!d.ok()) shutdown(p.dialer, SHUT_RDWR);
  return {d, acceptor.get()};
}

TEST(ClusterAuth, MatchingKeysPassOnBothSides) {
  auto [dialer, acceptor] = handshake({kKey}, {kKey});
  EXPECT_TRUE(dialer.ok()) << dialer.to_string();
  EXPECT_TRUE(acceptor.ok()) << acceptor.to_string();
}

TEST(ClusterAuth, WrongKeyFailsOnBothSides) {
  auto [dialer, acceptor] = handshake({kKey}, {"another key of enough bytes!!"});
  EXPECT_FALSE(dialer.ok());
  EXPECT_NE(dialer.message().find("does not hold this cluster key"), std::string::npos) << dialer.message();
  EXPECT_FALSE(acceptor.ok());
}

// The rotation of docs/security.md, old key O to new key N, in three rolling steps: {O} -> {O, N} ->
// {N, O} -> {N}. During each step processes of the step before and of the step after meet, in both
// directions (dialer and acceptor); every such pair must pass, and a process holding neither key fails.
TEST(ClusterAuth, RotationSteps_NeighbouringStepsInteroperateBothWays) {
  const std::string kOld = "the old cluster key, 32 bytes...";
  const std::string kNew = "the new cluster key, 32 bytes...";
  const std::vector<ClusterKeys> steps = {{kOld}, {kOld, kNew}, {kNew, kOld}, {kNew}};
  for (size_t i = 0; i + 1 < steps.size(); ++i) {
    for (const auto& [dialer_keys, acceptor_keys] :
         {std::pair{steps[i], steps[i + 1]}, std::pair{steps[i + 1], steps[i]}}) {
      auto [dialer, acceptor] = handshake(dialer_keys, acceptor_keys);
      EXPECT_TRUE(dialer.ok()) << "step " << i << ": " << dialer.to_string();
      EXPECT_TRUE(acceptor.ok()) << "step " << i << ": " << acceptor.to_string();
    }
  }
  for (const auto& keys : steps) {
    auto [dialer, acceptor] = handshake({"neither the old nor the new key"}, keys);
    EXPECT_FALSE(dialer.ok());
    EXPECT_FALSE(acceptor.ok());
    auto [dialer2, acceptor2] = handshake(keys, {"neither the old nor the new key"});
    EXPECT_FALSE(dialer2.ok());
    EXPECT_FALSE(acceptor2.ok());
  }
}

// Skipping a step splits the cluster: a process proving the new key first meets one that holds only
// the old. This is why the steps are done one after the other (and what "proves the first" means).
TEST(ClusterAuth, RotationSteps_SkippingAStepIsRefused) {
  const std::string kOld = "the old cluster key, 32 bytes...";
  const std::string kNew = "the new cluster key, 32 bytes...";
  for (const auto& [dialer_keys, acceptor_keys] :
       {std::pair{ClusterKeys{kOld}, ClusterKeys{kNew, kOld}}, std::pair{ClusterKeys{kNew, kOld}, ClusterKeys{kOld}},
        std::pair{ClusterKeys{kOld, kNew}, ClusterKeys{kNew}}, std::pair{ClusterKeys{kNew}, ClusterKeys{kOld, kNew}}}) {
    auto [dialer, acceptor] = handshake(dialer_keys, acceptor_keys);
    EXPECT_FALSE(dialer.ok() && acceptor.ok()) << dialer_keys.front() << " / " << acceptor_keys.front();
  }
}

TEST(ClusterAuth, AcceptorDropsJunkAtOnce) {
  Pair p;
  const std::string junk = std::string("\0\0\0\x10", 4) + " a request-plane frame";
  ASSERT_TRUE(net::write_full(p.dialer, junk.data(), junk.size(), "t").ok());
  const auto start = std::chrono::steady_clock::now();
  Status s = authenticate_acceptor(p.acceptor, {kKey}, "test", "junk", 2000);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("not a cluster handshake"), std::string::npos) << s.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1000));
  // Nothing was answered: the dialer's side has no byte to read.
  char byte;
  EXPECT_EQ(recv(p.dialer, &byte, 1, MSG_DONTWAIT), -1);
}

TEST(ClusterAuth, SilentPeerTimesOut) {
  Pair p;
  const auto start = std::chrono::steady_clock::now();
  Status s = authenticate_acceptor(p.acceptor, {kKey}, "test", "silent", 200);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("timed out"), std::string::npos) << s.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2000));
}

TEST(ClusterAuth, PeerLeavingWithoutAByteIsRefusedQuietly) {
  // A TCP health check connects and closes: refused, but not as a failed attempt (debug log only).
  Pair p;
  shutdown(p.dialer, SHUT_WR);
  Status s = authenticate_acceptor(p.acceptor, {kKey}, "test", "probe", 2000);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("closed before the handshake"), std::string::npos) << s.message();
}

TEST(ClusterAuth, ReflectedServerProofIsRefused) {
  // A dialer without the key sends back the acceptor's own proof as its response: the labels differ,
  // so it must not pass.
  Pair p;
  auto acceptor = std::async(std::launch::async,
                             [&] { return authenticate_acceptor(p.acceptor, {kKey}, "test", "reflector", 2000); });
  HandshakeFrame hello;
  hello.type = FrameType::kHello;
  hello.nonce.fill(7);
  const std::string bytes = serialize_frame(hello);
  ASSERT_TRUE(net::write_full(p.dialer, bytes.data(), bytes.size(), "t").ok());
  std::string challenge_bytes(kFrameHeaderBytes + kNonceBytes + kMacBytes, '\0');
  ASSERT_TRUE(net::read_full(p.dialer, challenge_bytes.data(), challenge_bytes.size(), "t").ok());
  auto challenge = parse_frame({reinterpret_cast<const uint8_t*>(challenge_bytes.data()), challenge_bytes.size()},
                               FrameType::kChallenge);
  ASSERT_TRUE(challenge.ok());
  HandshakeFrame response;
  response.type = FrameType::kResponse;
  response.mac = challenge->mac;
  const std::string reflected = serialize_frame(response);
  ASSERT_TRUE(net::write_full(p.dialer, reflected.data(), reflected.size(), "t").ok());
  EXPECT_FALSE(acceptor.get().ok());
}

TEST(ClusterAuth, ProofsDependOnKeyLabelAndBothNonces) {
  std::array<uint8_t, kNonceBytes> a{}, b{};
  b[0] = 1;
  const auto base = handshake_mac(kKey, true, a, b);
  EXPECT_NE(base, handshake_mac(kKey, false, a, b));
  EXPECT_NE(base, handshake_mac(kKey, true, b, a));
  EXPECT_NE(base, handshake_mac(kKey + "x", true, a, b));
  EXPECT_EQ(base, handshake_mac(kKey, true, a, b));
}

TEST(ClusterAuth, FrameParserRefusesMalformedFrames) {
  HandshakeFrame challenge;
  challenge.type = FrameType::kChallenge;
  challenge.nonce.fill(3);
  challenge.mac.fill(9);
  std::string bytes = serialize_frame(challenge);
  auto span = [](const std::string& s) { return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
  auto parsed = parse_frame(span(bytes), FrameType::kChallenge);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->nonce, challenge.nonce);
  EXPECT_EQ(parsed->mac, challenge.mac);
  EXPECT_FALSE(parse_frame(span(bytes), FrameType::kHello).ok());                      // another type
  EXPECT_FALSE(parse_frame(span(bytes.substr(0, bytes.size() - 1)), FrameType::kChallenge).ok());  // short
  EXPECT_FALSE(parse_frame(span(bytes + "x"), FrameType::kChallenge).ok());             // long
  EXPECT_FALSE(parse_frame(span(bytes.substr(0, 3)), FrameType::kChallenge).ok());      // no header
  std::string bad_magic = bytes;
  bad_magic[0] = 'X';
  EXPECT_FALSE(parse_frame(span(bad_magic), FrameType::kChallenge).ok());
}

class KeyFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("tandem-key-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& contents) {
    std::ofstream(dir_ / name) << contents;
    return (dir_ / name).string();
  }
  std::filesystem::path dir_;
};

TEST_F(KeyFile, TrailingNewlineIsNotPartOfTheKey) {
  auto keys = load_cluster_keys(write("k", kKey + "\n"));
  ASSERT_TRUE(keys.ok()) << keys.status().to_string();
  EXPECT_EQ(*keys, ClusterKeys{kKey});
}

TEST_F(KeyFile, OneKeyPerLineInOrder_BlankLinesAndTrailingBlanksDropped) {
  const std::string second = "fedcba9876543210fedcba9876543210";
  auto keys = load_cluster_keys(write("k", "\n" + kKey + " \r\n\n" + second + "\t\n"));
  ASSERT_TRUE(keys.ok()) << keys.status().to_string();
  EXPECT_EQ(*keys, (ClusterKeys{kKey, second}));
}

TEST_F(KeyFile, BinaryFileIsOneKey) {
  // 20 raw bytes, a newline among them: not text, so not split into lines.
  std::string raw("\x01\x02\x03\n\xff\xfe\x00\x10" "ghijklmnopqr", 20);
  raw.push_back('\n');
  std::ofstream(dir_ / "raw", std::ios::binary) << raw;
  auto keys = load_cluster_keys((dir_ / "raw").string());
  ASSERT_TRUE(keys.ok()) << keys.status().to_string();
  ASSERT_EQ(keys->size(), 1u);
  EXPECT_EQ(keys->front(), raw.substr(0, raw.size() - 1));
}

TEST_F(KeyFile, ShortKeyOnALaterLineNamesTheLine) {
  auto keys = load_cluster_keys(write("k", kKey + "\n\nshort\n"));
  ASSERT_FALSE(keys.ok());
  EXPECT_NE(keys.status().message().find("line 3"), std::string::npos) << keys.status().message();
  EXPECT_NE(keys.status().message().find("fewer than 16"), std::string::npos) << keys.status().message();
}

TEST_F(KeyFile, FingerprintIsShortAndTellsKeysApart) {
  const std::string a = key_fingerprint(kKey);
  EXPECT_EQ(a.size(), 8u);
  EXPECT_EQ(a, key_fingerprint(kKey));
  EXPECT_NE(a, key_fingerprint(kKey + "x"));
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos) << a;
}

TEST_F(KeyFile, MissingEmptyOrShortFileNamesTheFlag) {
  for (const auto& [path, words] : std::vector<std::pair<std::string, std::string>>{
           {(dir_ / "absent").string(), "cannot read"},
           {write("empty", ""), "empty"},
           {write("blank", " \n\n"), "empty"},
           {write("short", "abc\n"), "fewer than 16"}}) {
    auto keys = load_cluster_keys(path);
    ASSERT_FALSE(keys.ok()) << path;
    EXPECT_NE(keys.status().message().find("--cluster-key-file " + path), std::string::npos) << keys.status().message();
    EXPECT_NE(keys.status().message().find(words), std::string::npos) << keys.status().message();
  }
}

}  // namespace
}  // namespace tandem::security
