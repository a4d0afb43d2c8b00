// The SVG writer of report.h: latency percentiles against throughput, one point per load level,
// drawn with plain SVG elements (lines, circles, text) so that any browser or Markdown viewer shows it.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/tp-load/report.h"

namespace tpserve::load {
namespace {

constexpr double kWidth = 760, kHeight = 460;
constexpr double kLeft = 70, kRight = 150, kTop = 48, kBottom = 56;

struct Series {
  const char* name;
  const char* color;
  double LatencySummary::*field;
};
constexpr Series kSeries[] = {{"p50", "#1f77b4", &LatencySummary::p50_ms},
                              {"p90", "#2ca02c", &LatencySummary::p90_ms},
                              {"p99", "#ff7f0e", &LatencySummary::p99_ms},
                              {"p99.9", "#d62728", &LatencySummary::p999_ms}};

std::string Escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

struct Axes {
  std::vector<double> x_ticks, y_ticks;
  double X(double v) const { return kLeft + v / x_ticks.back() * (kWidth - kLeft - kRight); }
  double Y(double v) const { return kHeight - kBottom - v / y_ticks.back() * (kHeight - kTop - kBottom); }
};

std::string DrawAxes(const Axes& a) {
  std::string out;
  for (double t : a.x_ticks) {
    absl::StrAppendFormat(&out, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>\n", a.X(t), a.Y(0),
                          a.X(t), a.Y(a.y_ticks.back()));
    absl::StrAppendFormat(&out, "<text x='%.1f' y='%.1f' text-anchor='middle'>%g</text>\n", a.X(t), a.Y(0) + 18, t);
  }
  for (double t : a.y_ticks) {
    absl::StrAppendFormat(&out, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>\n", a.X(0), a.Y(t),
                          a.X(a.x_ticks.back()), a.Y(t));
    absl::StrAppendFormat(&out, "<text x='%.1f' y='%.1f' text-anchor='end'>%g</text>\n", a.X(0) - 6, a.Y(t) + 4, t);
  }
  absl::StrAppendFormat(&out, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='none' stroke='#444'/>\n",
                        a.X(0), a.Y(a.y_ticks.back()), a.X(a.x_ticks.back()) - a.X(0), a.Y(0) - a.Y(a.y_ticks.back()));
  absl::StrAppendFormat(&out, "<text x='%.1f' y='%.1f' text-anchor='middle'>throughput (requests/s)</text>\n",
                        (a.X(0) + a.X(a.x_ticks.back())) / 2, kHeight - 14);
  absl::StrAppendFormat(&out,
                        "<text x='18' y='%.1f' text-anchor='middle' transform='rotate(-90 18 %.1f)'>latency (ms)</text>\n",
                        (a.Y(0) + a.Y(a.y_ticks.back())) / 2, (a.Y(0) + a.Y(a.y_ticks.back())) / 2);
  return out;
}

std::string DrawSeries(const Axes& a, const std::vector<LevelResult>& levels, const Series& s, int index) {
  std::string points, marks;
  for (const LevelResult& l : levels) {
    const double x = a.X(l.stats.requests_per_s), y = a.Y(l.stats.latency.*s.field);
    absl::StrAppendFormat(&points, "%.1f,%.1f ", x, y);
    absl::StrAppendFormat(&marks, "<circle cx='%.1f' cy='%.1f' r='3' fill='%s'><title>%s %g: %.1f req/s, %s %.3f ms</title></circle>\n",
                          x, y, s.color, Name(l.mode) == "closed" ? "concurrency" : "rate", l.level,
                          l.stats.requests_per_s, s.name, l.stats.latency.*s.field);
  }
  const double legend_y = kTop + 10 + 22 * index, legend_x = kWidth - kRight + 16;
  return absl::StrFormat("<polyline fill='none' stroke='%s' stroke-width='2' points='%s'/>\n%s"
                         "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s' stroke-width='2'/>"
                         "<text x='%.1f' y='%.1f'>%s</text>\n",
                         s.color, points, marks, legend_x, legend_y, legend_x + 24, legend_y, s.color, legend_x + 30,
                         legend_y + 4, s.name);
}

}  // namespace

std::string Svg(const RunReport& r) {
  double max_x = 0, max_y = 0;
  for (const LevelResult& l : r.levels) {
    max_x = std::max(max_x, l.stats.requests_per_s);
    for (const Series& s : kSeries) max_y = std::max(max_y, l.stats.latency.*s.field);
  }
  Axes axes{AxisTicks(max_x * 1.05, 6), AxisTicks(max_y * 1.05, 6)};
  const std::string title =
      absl::StrFormat("tp-load: %s (%s), batch %d, %s %s %s, %s loop, device %s", r.model, r.irreps, r.options.batch,
                      r.options.precision, Name(r.options.operation), Name(r.options.transport),
                      Name(r.options.mode), r.device);
  std::string out = absl::StrFormat(
      "<svg xmlns='http://www.w3.org/2000/svg' width='%g' height='%g' viewBox='0 0 %g %g' "
      "font-family='sans-serif' font-size='12'>\n<rect width='100%%' height='100%%' fill='white'/>\n"
      "<text x='%g' y='24' text-anchor='middle' font-size='13'>%s</text>\n",
      kWidth, kHeight, kWidth, kHeight, kWidth / 2, Escape(title));
  out += DrawAxes(axes);
  int index = 0;
  for (const Series& s : kSeries) out += DrawSeries(axes, r.levels, s, index++);
  // Each level named above its highest point, so that the path through the sweep can be read.
  for (const LevelResult& l : r.levels) {
    absl::StrAppendFormat(&out, "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='10' fill='#555'>%s%g</text>\n",
                          axes.X(l.stats.requests_per_s), axes.Y(l.stats.latency.p999_ms) - 7,
                          l.mode == LoopMode::kClosed ? "c=" : "", l.level);
  }
  out += "</svg>\n";
  return out;
}

}  // namespace tpserve::load
