// tp-load's pieces without a server: percentiles, the sweep parser, Poisson and constant arrivals,
// stability, Prometheus parsing and interval deltas, and the JSON / CSV / SVG writers.
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "client/tp-load/arrivals.h"
#include "client/tp-load/load_run.h"
#include "client/tp-load/metrics_scrape.h"
#include "client/tp-load/options.h"
#include "client/tp-load/report.h"
#include "client/tp-load/stats.h"
#include "gtest/gtest.h"

namespace tpserve::load {
namespace {

TEST(PercentileTest, NearestRankOfOneToHundred) {
  std::vector<double> v(100);
  std::iota(v.begin(), v.end(), 1.0);  // 1..100
  EXPECT_EQ(Percentile(v, 0.50), 50);
  EXPECT_EQ(Percentile(v, 0.90), 90);
  EXPECT_EQ(Percentile(v, 0.99), 99);
  EXPECT_EQ(Percentile(v, 0.999), 100);
  EXPECT_EQ(Percentile(v, 1.0), 100);
  EXPECT_EQ(Percentile(v, 0.0), 1);
  EXPECT_EQ(Percentile(v, 0.001), 1);
  EXPECT_EQ(Percentile(v, 0.011), 2);
  EXPECT_EQ(Percentile({}, 0.5), 0);
  EXPECT_EQ(Percentile({7}, 0.999), 7);
}

TEST(PercentileTest, SummaryOfShuffledValues) {
  std::vector<double> v(1000);
  std::iota(v.begin(), v.end(), 1.0);
  std::shuffle(v.begin(), v.end(), std::mt19937_64(3));
  LatencySummary s = Summarize(v);
  EXPECT_EQ(s.count, 1000);
  EXPECT_DOUBLE_EQ(s.mean_ms, 500.5);
  EXPECT_EQ(s.min_ms, 1);
  EXPECT_EQ(s.p50_ms, 500);
  EXPECT_EQ(s.p90_ms, 900);
  EXPECT_EQ(s.p95_ms, 950);
  EXPECT_EQ(s.p99_ms, 990);
  EXPECT_EQ(s.p999_ms, 999);
  EXPECT_EQ(s.max_ms, 1000);
}

TEST(SweepTest, RangesListsAndSingleLevels) {
  EXPECT_EQ(*ParseSweep("1:64:x2"), (std::vector<double>{1, 2, 4, 8, 16, 32, 64}));
  EXPECT_EQ(*ParseSweep("1:40:x2"), (std::vector<double>{1, 2, 4, 8, 16, 32}));
  EXPECT_EQ(*ParseSweep("100:400:+100"), (std::vector<double>{100, 200, 300, 400}));
  EXPECT_EQ(ParseSweep("0.1:0.3:+0.1")->size(), 3u);
  EXPECT_EQ(*ParseSweep("1,4,16"), (std::vector<double>{1, 4, 16}));
  EXPECT_EQ(*ParseSweep("8"), (std::vector<double>{8}));
  for (const char* bad : {"", "0", "-1", "a", "1:64", "1:64:x1", "64:1:x2", "1:64:*2", "1:64:+0", "1,,2",
                          "1:1000000:+1"}) {
    EXPECT_FALSE(ParseSweep(bad).ok()) << bad;
  }
}

TEST(ArrivalsTest, ConstantGapsAreExact) {
  ArrivalSchedule schedule(Arrivals::kConstant, 250, 1);
  for (int i = 0; i < 1000; ++i) EXPECT_NEAR(schedule.NextOffsetSeconds(), i / 250.0, 1e-12);
}

// Exponential gaps of mean 1/rate; counts per interval Poisson (variance = mean). Bounds are ~5
// standard errors wide for 20000 draws, so a correct generator fails with negligible probability,
// and the seed makes the run repeatable.
TEST(ArrivalsTest, PoissonGapsHaveTheRightMeanAndDispersion) {
  const double rate = 1000;
  const int n = 20000;
  ArrivalSchedule schedule(Arrivals::kPoisson, rate, 42);
  std::vector<double> offsets(n);
  for (double& t : offsets) t = schedule.NextOffsetSeconds();
  std::vector<double> gaps(n);
  double mean = 0, var = 0;
  for (int i = 0; i < n; ++i) {
    gaps[i] = offsets[i] - (i > 0 ? offsets[i - 1] : 0);
    ASSERT_GT(gaps[i], 0);
    mean += gaps[i] / n;
  }
  for (double g : gaps) var += (g - mean) * (g - mean) / (n - 1);
  EXPECT_NEAR(mean, 1 / rate, 5 * (1 / rate) / std::sqrt(n));            // standard error of the mean
  EXPECT_NEAR(std::sqrt(var) / mean, 1.0, 0.05);                         // exponential: CV = 1
  // Memorylessness: P(gap > mean) = e^-1.
  const double above = std::count_if(gaps.begin(), gaps.end(), [&](double g) { return g > 1 / rate; }) / double(n);
  EXPECT_NEAR(above, std::exp(-1.0), 5 * std::sqrt(0.23 / n));
  // Counts in 10 ms bins (mean 10): index of dispersion ~1.
  std::vector<int> bins(static_cast<size_t>(offsets.back() / 0.01));
  for (double t : offsets) {
    size_t b = static_cast<size_t>(t / 0.01);
    if (b < bins.size()) ++bins[b];
  }
  double bin_mean = 0, bin_var = 0;
  for (int c : bins) bin_mean += c / double(bins.size());
  for (int c : bins) bin_var += (c - bin_mean) * (c - bin_mean) / (bins.size() - 1);
  EXPECT_NEAR(bin_mean, 10, 0.3);
  EXPECT_NEAR(bin_var / bin_mean, 1.0, 0.15);
  // The same seed, the same schedule.
  ArrivalSchedule again(Arrivals::kPoisson, rate, 42);
  EXPECT_EQ(again.NextOffsetSeconds(), offsets[0]);
}

WindowStats Window(double rps, double mean_ms) {
  WindowStats w;
  w.requests_per_s = rps;
  w.latency.count = 100;
  w.latency.mean_ms = mean_ms;
  return w;
}

TEST(StabilityTest, ThreeWindowsWithinTenPercent) {
  EXPECT_TRUE(Stable({Window(100, 1.0), Window(105, 1.05), Window(96, 0.97)}, 0.10));
  EXPECT_FALSE(Stable({Window(100, 1.0), Window(130, 1.0), Window(100, 1.0)}, 0.10));
  EXPECT_FALSE(Stable({Window(100, 1.0), Window(100, 1.5), Window(100, 1.0)}, 0.10));
  EXPECT_FALSE(Stable({Window(100, 1.0), Window(100, 1.0)}, 0.10));
  EXPECT_FALSE(Stable({Window(0, 0), Window(0, 0), WindowStats()}, 0.10));
}

TEST(RecorderTest, WindowsSplitTheRecords) {
  Recorder r;
  r.Record(1.5, 0, 8, 100, false);
  r.Record(2.5, 14, 0, 0, true);
  WindowData w = r.Take(2.0);
  EXPECT_EQ(w.ok, 1);
  EXPECT_EQ(w.errors_by_code.at("UNAVAILABLE"), 1);
  EXPECT_EQ(w.late_sends, 1);
  EXPECT_EQ(Stats(w).requests_per_s, 0.5);
  EXPECT_EQ(Stats(w).samples_per_s, 4);
  EXPECT_EQ(r.Take(1.0).ok, 0);
  EXPECT_EQ(r.total_completed(), 2);
  EXPECT_EQ(CodeName(4), "DEADLINE_EXCEEDED");
}

const char kBefore[] = R"(# HELP tp_requests_total Finished RPCs
# TYPE tp_requests_total counter
tp_requests_total{code="OK",method="Forward"} 10
tp_requests_total{code="UNAVAILABLE",method="Forward"} 1
tp_queue_time_seconds_sum{device="cpu",model="m"} 0.5
tp_queue_time_seconds_count{device="cpu",model="m"} 10
tp_compute_time_seconds_sum{device="cpu"} 1
tp_compute_time_seconds_count{device="cpu"} 5
tp_batch_size_sum{device="cpu",model="m"} 80
tp_batch_size_count{device="cpu",model="m"} 5
tp_batch_size_bucket{device="cpu",model="m",le="+Inf"} 5
)";
const char kAfter[] = R"(tp_requests_total{code="OK",method="Forward"} 30
tp_requests_total{code="UNAVAILABLE",method="Forward"} 1
tp_requests_total{code="OK",method="Backward"} 4
tp_queue_time_seconds_sum{device="cpu",model="m"} 0.9
tp_queue_time_seconds_count{device="cpu",model="m"} 30
tp_compute_time_seconds_sum{device="cpu"} 2
tp_compute_time_seconds_count{device="cpu"} 10
tp_batch_size_sum{device="cpu",model="m"} 280
tp_batch_size_count{device="cpu",model="m"} 10
)";

TEST(MetricsScrapeTest, DeltasBetweenTwoScrapes) {
  Scrape before = ParsePrometheus(kBefore), after = ParsePrometheus(kAfter);
  EXPECT_EQ(before.size(), 9u);
  EXPECT_EQ(SumSeries(before, "tp_requests_total"), 11);
  EXPECT_EQ(SumSeries(before, "tp_requests_total", {"code=\"OK\""}), 10);
  EXPECT_EQ(SumSeries(before, "tp_batch_size"), 0) << "a longer name is another series";
  ServerInterval s = Interval("h:1", before, after);
  EXPECT_EQ(s.forward_ok, 20);
  EXPECT_EQ(s.backward_ok, 4);
  EXPECT_EQ(s.requests_by_method_code.count("Forward UNAVAILABLE"), 0u) << "no change, no entry";
  EXPECT_NEAR(s.queue_ms_mean, 1e3 * 0.4 / 20, 1e-9);
  EXPECT_NEAR(s.compute_ms_mean, 1e3 * 1.0 / 5, 1e-9);
  EXPECT_NEAR(s.batch_samples_mean, 200.0 / 5, 1e-9);
  EXPECT_EQ(s.launches, 5);
  ServerInterval other = s;
  other.queue_ms_mean = 0;
  ServerInterval total = Total({s, other});
  EXPECT_EQ(total.forward_ok, 40);
  EXPECT_NEAR(total.queue_ms_mean, s.queue_ms_mean / 2, 1e-9) << "weighted by queued requests";
}

LevelResult Level(double level, double rps, double p50) {
  LevelResult l;
  l.level = level;
  l.stable = true;
  l.reported.seconds = 2;
  l.reported.ok = static_cast<int64_t>(rps * 2);
  l.reported.errors_by_code["UNAVAILABLE"] = 3;
  l.stats.requests_per_s = rps;
  l.stats.latency = {100, p50, p50 / 2, p50, 1.5 * p50, 1.8 * p50, 2 * p50, 3 * p50, 4 * p50};
  return l;
}

RunReport SampleReport() {
  RunReport r;
  r.model = "m";
  r.irreps = "4x0e";
  r.device = "cpu";
  r.levels = {Level(1, 100, 1.0), Level(2, 180, 1.1), Level(4, 300, 1.3)};
  return r;
}

TEST(ReportTest, JsonHoldsEveryFigure) {
  nlohmann::json j = ToJson(SampleReport());
  ASSERT_EQ(j["levels"].size(), 3u);
  const nlohmann::json& l = j["levels"][2];
  for (const char* key : {"p50", "p90", "p95", "p99", "p99_9", "max", "mean"}) {
    EXPECT_TRUE(l["latency_ms"][key].is_number()) << key;
  }
  EXPECT_EQ(l["latency_ms"]["p99_9"], 3 * 1.3);
  EXPECT_EQ(l["requests_per_s"], 300);
  EXPECT_EQ(l["concurrency"], 4);
  EXPECT_EQ(l["errors_by_code"]["UNAVAILABLE"], 3);
  for (const char* key : {"samples_per_s", "megabytes_per_s", "late_sends", "stable", "windows", "servers"}) {
    EXPECT_TRUE(l.contains(key)) << key;
  }
}

TEST(ReportTest, CsvHasAHeaderAndOneRowPerLevel) {
  std::string csv = Csv(SampleReport());
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);
  EXPECT_NE(csv.find("closed,4,2.000,600,3,300.000"), std::string::npos) << csv;
  EXPECT_NE(csv.find("UNAVAILABLE=3"), std::string::npos);
}

TEST(ReportTest, SvgPlotsFourPercentilesOverThroughput) {
  std::string svg = Svg(SampleReport());
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  size_t polylines = 0;
  for (size_t at = svg.find("<polyline"); at != std::string::npos; at = svg.find("<polyline", at + 1)) ++polylines;
  EXPECT_EQ(polylines, 4u);
  size_t circles = 0;
  for (size_t at = svg.find("<circle"); at != std::string::npos; at = svg.find("<circle", at + 1)) ++circles;
  EXPECT_EQ(circles, 12u);
  for (const char* label : {">p50<", ">p90<", ">p99<", ">p99.9<", "throughput (requests/s)", "latency (ms)"}) {
    EXPECT_NE(svg.find(label), std::string::npos) << label;
  }
}

TEST(ReportTest, AxisTicksAreRoundAndCoverTheRange) {
  EXPECT_EQ(AxisTicks(300, 6), (std::vector<double>{0, 50, 100, 150, 200, 250, 300}));
  EXPECT_EQ(AxisTicks(0.9, 4), (std::vector<double>{0, 0.5, 1.0}));
  std::vector<double> t = AxisTicks(1234, 5);
  EXPECT_GE(t.back(), 1234);
  EXPECT_LE(t.size(), 8u);
}

TEST(SaturationTest, StopsWhenTwoLevelsAddLittle) {
  std::vector<LevelResult> levels{Level(1, 100, 1), Level(2, 190, 1), Level(4, 300, 1)};
  EXPECT_FALSE(Saturated(levels));
  levels.push_back(Level(8, 310, 2));
  EXPECT_FALSE(Saturated(levels)) << "one flat level is not yet saturation";
  levels.push_back(Level(16, 305, 4));
  EXPECT_TRUE(Saturated(levels));
}

}  // namespace
}  // namespace tpserve::load
