// Tests of kernels/core/irreps.h: e3nn's irreps syntax, dims and offsets, e3nn's printing, and
// the parser's errors (which must say where and why).
#include "kernels/core/irreps.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/reference_case.h"

namespace tpserve {
namespace {

// True when `message` contains `part`; prints both otherwise.
::testing::AssertionResult Contains(const std::string& message, const std::string& part) {
  if (absl::StrContains(message, part)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << message << "\" does not contain \"" << part << "\"";
}

struct Entry {
  int mul, l, parity;
};

// Parses `text` and checks every entry, the offsets and the dim against `want`.
void ExpectParsesTo(const std::string& text, const std::vector<Entry>& want) {
  SCOPED_TRACE(absl::StrCat("irreps \"", text, "\""));
  absl::StatusOr<Irreps> irreps = Irreps::Parse(text);
  ASSERT_TRUE(irreps.ok()) << irreps.status();
  ASSERT_EQ(irreps->size(), static_cast<int>(want.size()));
  ASSERT_EQ(irreps->entries().size(), want.size());
  int64_t offset = 0;
  for (int i = 0; i < irreps->size(); ++i) {
    SCOPED_TRACE(absl::StrCat("entry ", i));
    EXPECT_EQ((*irreps)[i].mul, want[i].mul);
    EXPECT_EQ((*irreps)[i].ir.l, want[i].l);
    EXPECT_EQ((*irreps)[i].ir.parity, want[i].parity);
    EXPECT_EQ((*irreps)[i].dim(), int64_t{want[i].mul} * (2 * want[i].l + 1));
    EXPECT_EQ(irreps->offset(i), offset);
    offset += int64_t{want[i].mul} * (2 * want[i].l + 1);
  }
  EXPECT_EQ(irreps->dim(), offset);
}

TEST(IrrepsParse, SeedShapeWithSpaces) {
  ExpectParsesTo("128x0e + 128x1e + 128x2e", {{128, 0, 1}, {128, 1, 1}, {128, 2, 1}});
  absl::StatusOr<Irreps> irreps = Irreps::Parse("128x0e + 128x1e + 128x2e");
  ASSERT_TRUE(irreps.ok());
  EXPECT_EQ(irreps->dim(), 128 * (1 + 3 + 5));
  EXPECT_EQ(irreps->offset(0), 0);
  EXPECT_EQ(irreps->offset(1), 128);
  EXPECT_EQ(irreps->offset(2), 128 + 128 * 3);
  EXPECT_EQ(irreps->max_l(), 2);
}

TEST(IrrepsParse, BareIrrepHasMultiplicityOne) {
  ExpectParsesTo("1o", {{1, 1, -1}});
  ExpectParsesTo("0e", {{1, 0, 1}});
  ExpectParsesTo("1o + 2x2e", {{1, 1, -1}, {2, 2, 1}});
}

TEST(IrrepsParse, NoSpacesAroundPlus) {
  ExpectParsesTo("3x2e+1x0o", {{3, 2, 1}, {1, 0, -1}});
}

TEST(IrrepsParse, WhitespaceAroundTermsAndX) {
  ExpectParsesTo("  3x2e  +1x0o ", {{3, 2, 1}, {1, 0, -1}});
  // e3nn splits on 'x' and strips each side (int("2 ") and Irrep(" 1o") both parse).
  ExpectParsesTo("2 x 1o", {{2, 1, -1}});
}

TEST(IrrepsParse, YParityIsMinusOneToTheL) {
  for (int l = 0; l <= 6; ++l) {
    const int parity = (l % 2 == 0) ? 1 : -1;
    ExpectParsesTo(absl::StrCat(l, "y"), {{1, l, parity}});
    ExpectParsesTo(absl::StrCat("4x", l, "y"), {{4, l, parity}});
  }
}

TEST(IrrepsParse, RepeatedAndUnsortedEntriesKeepTheirOrder) {
  ExpectParsesTo("1x1o + 2x0e + 1x1o", {{1, 1, -1}, {2, 0, 1}, {1, 1, -1}});
  ExpectParsesTo("2x2e + 1x0e + 2x2e + 3x1o", {{2, 2, 1}, {1, 0, 1}, {2, 2, 1}, {3, 1, -1}});
}

TEST(IrrepsParse, EmptyStringIsEmptyIrreps) {
  ExpectParsesTo("", {});
  ExpectParsesTo("   ", {});
  absl::StatusOr<Irreps> irreps = Irreps::Parse("");
  ASSERT_TRUE(irreps.ok());
  EXPECT_EQ(irreps->dim(), 0);
  EXPECT_EQ(irreps->ToString(), "");
}

TEST(IrrepsParse, ZeroMultiplicityIsKeptWithZeroDim) {
  ExpectParsesTo("0x1e", {{0, 1, 1}});
  ExpectParsesTo("2x0e + 0x1e + 1x2o", {{2, 0, 1}, {0, 1, 1}, {1, 2, -1}});
  absl::StatusOr<Irreps> irreps = Irreps::Parse("2x0e + 0x1e + 1x2o");
  ASSERT_TRUE(irreps.ok());
  EXPECT_EQ(irreps->offset(1), 2);
  EXPECT_EQ(irreps->offset(2), 2);
  EXPECT_EQ(irreps->dim(), 7);
}

TEST(IrrepsParse, LargeLAndMultiplicity) {
  ExpectParsesTo("1000x11o + 3x16e", {{1000, 11, -1}, {3, 16, 1}});
}

TEST(IrrepsToString, PrintsAsE3nn) {
  struct Case {
    const char* input;
    const char* printed;
  };
  const Case cases[] = {
      {"128x0e + 128x1e + 128x2e", "128x0e+128x1e+128x2e"},
      {"1o", "1x1o"},
      {"3x2e+1x0o", "3x2e+1x0o"},
      {"2y", "1x2e"},
      {"3x3y + 1y", "3x3o+1x1o"},
      {"1x1o + 2x0e + 1x1o", "1x1o+2x0e+1x1o"},
      {"0x1e", "0x1e"},
      {"", ""},
      {" 5x0e ", "5x0e"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Irreps> irreps = Irreps::Parse(c.input);
    ASSERT_TRUE(irreps.ok()) << c.input << ": " << irreps.status();
    EXPECT_EQ(irreps->ToString(), c.printed) << "input \"" << c.input << "\"";
  }
}

TEST(IrrepsToString, RoundTripsThroughParse) {
  for (const char* text : {"128x0e+128x1e+128x2e", "1x1o+2x0e+1x1o", "7x5o+0x3e+2x11e"}) {
    absl::StatusOr<Irreps> irreps = Irreps::Parse(text);
    ASSERT_TRUE(irreps.ok()) << irreps.status();
    absl::StatusOr<Irreps> again = Irreps::Parse(irreps->ToString());
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->ToString(), text);
    EXPECT_EQ(again->dim(), irreps->dim());
  }
}

TEST(IrrepsConstruct, FromEntriesComputesOffsetsAndDim) {
  Irreps irreps({{2, {1, -1}}, {3, {0, 1}}, {1, {2, 1}}});
  EXPECT_EQ(irreps.size(), 3);
  EXPECT_EQ(irreps.offset(0), 0);
  EXPECT_EQ(irreps.offset(1), 6);
  EXPECT_EQ(irreps.offset(2), 9);
  EXPECT_EQ(irreps.dim(), 14);
  EXPECT_EQ(irreps.max_l(), 2);
  EXPECT_EQ(irreps.ToString(), "2x1o+3x0e+1x2e");
  EXPECT_EQ(Irreps().dim(), 0);
  EXPECT_EQ(Irreps().size(), 0);
}

TEST(IrrepParse, SingleIrreps) {
  struct Case {
    const char* text;
    int l, parity;
  };
  for (const Case& c : {Case{"0e", 0, 1}, Case{"1o", 1, -1}, Case{"2e", 2, 1}, Case{"3y", 3, -1},
                        Case{"4y", 4, 1}, Case{" 10o ", 10, -1}}) {
    absl::StatusOr<Irrep> ir = Irrep::Parse(c.text);
    ASSERT_TRUE(ir.ok()) << c.text << ": " << ir.status();
    EXPECT_EQ(ir->l, c.l) << c.text;
    EXPECT_EQ(ir->parity, c.parity) << c.text;
    EXPECT_EQ(ir->dim(), 2 * c.l + 1);
  }
  EXPECT_EQ((Irrep{2, -1}).ToString(), "2o");
  EXPECT_EQ((Irrep{0, 1}).ToString(), "0e");
  for (const char* bad : {"", "e", "1", "1q", "-1e", "x1e", "1.0e", "1ee"}) {
    absl::StatusOr<Irrep> ir = Irrep::Parse(bad);
    ASSERT_FALSE(ir.ok()) << "\"" << bad << "\" parsed as l=" << ir->l;
    EXPECT_EQ(ir.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(Contains(std::string(ir.status().message()), "expected"));
  }
}

TEST(IrrepEquality, ComparesLAndParity) {
  EXPECT_EQ((Irrep{1, -1}), (Irrep{1, -1}));
  EXPECT_NE((Irrep{1, -1}), (Irrep{1, 1}));
  EXPECT_NE((Irrep{1, -1}), (Irrep{2, -1}));
}

TEST(IsInProduct, TriangleRuleAndParity) {
  const Irrep e0{0, 1}, o0{0, -1}, o1{1, -1}, e1{1, 1}, e2{2, 1}, o2{2, -1}, o3{3, -1}, e3{3, 1};
  // 1o x 1o = 0e + 1e + 2e
  EXPECT_TRUE(IsInProduct(o1, o1, e0));
  EXPECT_TRUE(IsInProduct(o1, o1, e1));
  EXPECT_TRUE(IsInProduct(o1, o1, e2));
  EXPECT_FALSE(IsInProduct(o1, o1, o1));
  EXPECT_FALSE(IsInProduct(o1, o1, o0));
  EXPECT_FALSE(IsInProduct(o1, o1, e3));
  // 2e x 1o = 1o + 2o + 3o
  EXPECT_TRUE(IsInProduct(e2, o1, o1));
  EXPECT_TRUE(IsInProduct(e2, o1, o2));
  EXPECT_TRUE(IsInProduct(e2, o1, o3));
  EXPECT_FALSE(IsInProduct(e2, o1, e0));
  EXPECT_FALSE(IsInProduct(e2, o1, e1));
  EXPECT_FALSE(IsInProduct(e2, o1, o0));
  // 0e is the identity; 0o flips parity.
  EXPECT_TRUE(IsInProduct(e0, e3, e3));
  EXPECT_FALSE(IsInProduct(e0, e3, e2));
  EXPECT_TRUE(IsInProduct(o0, e3, o3));
  EXPECT_FALSE(IsInProduct(o0, e3, e3));
}

// The number written after "at character " in `message`, or -1.
int CharacterPosition(const std::string& message) {
  const std::string key = "at character ";
  const size_t at = message.find(key);
  if (at == std::string::npos) return -1;
  size_t end = at + key.size();
  while (end < message.size() && absl::ascii_isdigit(message[end])) ++end;
  int position = -1;
  if (!absl::SimpleAtoi(message.substr(at + key.size(), end - at - key.size()), &position)) return -1;
  return position;
}

struct MalformedCase {
  std::string text;
  int term_index;    // index of the offending '+'-separated term
  std::string term;  // the offending term, stripped
};

void PrintTo(const MalformedCase& c, std::ostream* os) { *os << "\"" << c.text << "\""; }

class IrrepsParseErrorTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(IrrepsParseErrorTest, ReturnsInvalidArgumentNamingTermPositionAndExpectation) {
  const MalformedCase& c = GetParam();
  absl::StatusOr<Irreps> irreps = Irreps::Parse(c.text);
  ASSERT_FALSE(irreps.ok()) << "\"" << c.text << "\" parsed as " << irreps->ToString();
  EXPECT_EQ(irreps.status().code(), absl::StatusCode::kInvalidArgument) << irreps.status();
  const std::string message(irreps.status().message());
  // Names the whole input, which term and its text...
  EXPECT_TRUE(Contains(message, absl::StrCat("\"", c.text, "\"")));
  EXPECT_TRUE(Contains(message, absl::StrCat("term ", c.term_index)));
  EXPECT_TRUE(Contains(message, absl::StrCat("'", c.term, "'")));
  // ...where it starts (the position points at the term, possibly at its leading whitespace)...
  const int position = CharacterPosition(message);
  ASSERT_GE(position, 0) << "no position in: " << message;
  ASSERT_LE(position, static_cast<int>(c.text.size())) << message;
  EXPECT_TRUE(absl::StartsWith(absl::StripLeadingAsciiWhitespace(absl::string_view(c.text).substr(position)), c.term))
      << "position " << position << " does not point at '" << c.term << "' in: " << message;
  // ...and what was expected.
  EXPECT_TRUE(Contains(message, "expected"));
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, IrrepsParseErrorTest,
    ::testing::Values(MalformedCase{"1x", 0, "1x"}, MalformedCase{"x1e", 0, "x1e"}, MalformedCase{"1xe", 0, "1xe"},
                      MalformedCase{"-1x0e", 0, "-1x0e"}, MalformedCase{"1x0q", 0, "1x0q"},
                      MalformedCase{"0e++1o", 1, ""}, MalformedCase{"abc", 0, "abc"},
                      MalformedCase{"1.5x0e", 0, "1.5x0e"}, MalformedCase{"1x-1e", 0, "1x-1e"},
                      MalformedCase{"1x0e + 2x1q", 1, "2x1q"}, MalformedCase{"1x0e + 2x1o + ", 2, ""},
                      MalformedCase{"+1x0e", 0, ""}, MalformedCase{"1x0e + 3x", 1, "3x"},
                      MalformedCase{"2x2x0e", 0, "2x2x0e"}, MalformedCase{"99999999999x0e", 0, "99999999999x0e"},
                      MalformedCase{"1x99999999999e", 0, "1x99999999999e"}, MalformedCase{"1x0e 1x1o", 0, "1x0e 1x1o"}),
    [](const ::testing::TestParamInfo<MalformedCase>& info) { return absl::StrCat("case", info.index); });

// The e3nn printing recorded in every reference case equals ours.
TEST(IrrepsToString, MatchesE3nnPrintingOfEveryReferenceCase) {
  const std::vector<std::string> files = testing::ReferenceCaseFiles();
  ASSERT_FALSE(files.empty()) << "no ref_*.json in " << testing::ReferenceDir();
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    absl::StatusOr<testing::ReferenceCase> ref = testing::LoadReferenceCase(file);
    ASSERT_TRUE(ref.ok()) << ref.status();
    const std::pair<const std::string*, const std::string*> pairs[] = {
        {&ref->irreps_in1, &ref->irreps_in1_e3nn},
        {&ref->irreps_in2, &ref->irreps_in2_e3nn},
        {&ref->irreps_out, &ref->irreps_out_e3nn}};
    for (const auto& [given, printed] : pairs) {
      absl::StatusOr<Irreps> irreps = Irreps::Parse(*given);
      ASSERT_TRUE(irreps.ok()) << *given << ": " << irreps.status();
      EXPECT_EQ(irreps->ToString(), *printed) << "input \"" << *given << "\"";
    }
  }
}

}  // namespace
}  // namespace tpserve
