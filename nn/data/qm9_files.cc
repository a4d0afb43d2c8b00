#include "nn/data/qm9_files.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nn/data/npz.h"

namespace tpserve::nn::data {
namespace {

namespace fs = std::filesystem;

absl::Status Bad(const std::string& where, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", why));
}

// The first of `names` present in `arrays`; null when none is.
const NumericArray* Find(const std::map<std::string, NumericArray>& arrays, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    auto it = arrays.find(name);
    if (it != arrays.end()) return &it->second;
  }
  return nullptr;
}

const NumericArray* FindTarget(const std::map<std::string, NumericArray>& arrays, const std::string& name) {
  auto it = arrays.find(name);
  if (it != arrays.end()) return &it->second;
  for (const auto& [key, array] : arrays) {
    if (absl::EqualsIgnoreCase(key, name)) return &array;
  }
  return nullptr;
}

std::string Keys(const std::map<std::string, NumericArray>& arrays) {
  std::vector<std::string> keys;
  for (const auto& [key, unused] : arrays) keys.push_back(key);
  return absl::StrJoin(keys, ", ");
}

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be opened"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

bool ParseDouble(absl::string_view text, double* out) {
  return absl::SimpleAtod(absl::StripAsciiWhitespace(text), out) && std::isfinite(*out);
}

// A fixed-column field of a molfile line (columns [begin, begin + width), 0-based).
absl::string_view Field(absl::string_view line, size_t begin, size_t width) {
  if (begin >= line.size()) return {};
  return absl::StripAsciiWhitespace(line.substr(begin, width));
}

}  // namespace

absl::StatusOr<std::vector<Molecule>> LoadQm9Npz(const std::string& path, const Qm9LoadOptions& options) {
  absl::StatusOr<std::map<std::string, NumericArray>> read = ReadNpz(path);
  if (!read.ok()) return read.status();
  const std::map<std::string, NumericArray>& arrays = *read;
  const NumericArray* z = Find(arrays, {"Z", "charges", "atomic_numbers"});
  const NumericArray* r = Find(arrays, {"R", "positions", "coordinates"});
  const NumericArray* n = Find(arrays, {"N", "num_atoms"});
  if (z == nullptr || r == nullptr) {
    return Bad(path, absl::StrCat("expected atomic numbers (key Z, charges or atomic_numbers) and positions (R, ",
                                  "positions or coordinates); the archive holds: ", Keys(arrays)));
  }
  const bool padded = z->shape.size() == 2;
  int64_t num_molecules = 0;
  std::vector<int64_t> counts;
  if (padded) {
    num_molecules = z->shape[0];
    const int64_t width = z->shape[1];
    if (r->shape != std::vector<int64_t>{num_molecules, width, 3}) {
      return Bad(path, absl::StrCat("padded layout: Z is [", num_molecules, ", ", width, "], so R must be [",
                                    num_molecules, ", ", width, ", 3]"));
    }
    for (int64_t m = 0; m < num_molecules; ++m) {
      int64_t count = 0;
      while (count < width && z->values[m * width + count] != 0) ++count;
      counts.push_back(count);
    }
  } else {
    if (z->shape.size() != 1 || n == nullptr) {
      return Bad(path, "expected Z [total_atoms] with N [num_molecules] (concatenated) or Z [num_molecules, "
                       "max_atoms] (padded)");
    }
    if (n->shape.size() != 1) return Bad(path, "N: expected shape [num_molecules]");
    num_molecules = n->shape[0];
    int64_t total = 0;
    for (double c : n->values) {
      if (c < 0 || c != std::floor(c)) return Bad(path, absl::StrCat("N: atom count ", c, " is not a count"));
      counts.push_back(static_cast<int64_t>(c));
      total += counts.back();
    }
    if (z->shape[0] != total || r->shape != std::vector<int64_t>{total, 3}) {
      return Bad(path, absl::StrCat("concatenated layout: N sums to ", total, " atoms, so Z must be [", total,
                                    "] and R [", total, ", 3]"));
    }
  }
  if (n != nullptr && padded) {
    if (n->shape.empty() || n->shape[0] != num_molecules) return Bad(path, "N: expected one count per molecule");
    for (int64_t m = 0; m < num_molecules; ++m) {
      if (n->values[m] != static_cast<double>(counts[m])) {
        return Bad(path, absl::StrCat("molecule ", m, ": N says ", n->values[m], " atoms, Z has ", counts[m],
                                      " non-zero entries before its padding"));
      }
    }
  }
  std::vector<const NumericArray*> targets;
  for (const std::string& name : options.target_names) {
    const NumericArray* t = FindTarget(arrays, name);
    if (t == nullptr) return Bad(path, absl::StrCat("no target array '", name, "'; the archive holds: ", Keys(arrays)));
    if (t->shape.empty() || t->shape[0] != num_molecules || static_cast<int64_t>(t->values.size()) != num_molecules) {
      return Bad(path, absl::StrCat("target '", name, "': expected shape [", num_molecules, "]"));
    }
    targets.push_back(t);
  }
  if (options.max_molecules > 0) num_molecules = std::min(num_molecules, options.max_molecules);
  std::vector<Molecule> molecules;
  int64_t atom = 0;  // concatenated layout: first atom of molecule m
  for (int64_t m = 0; m < num_molecules; ++m) {
    Molecule mol;
    mol.name = absl::StrCat("molecule ", m);
    const int64_t width = padded ? z->shape[1] : 0;
    for (int64_t a = 0; a < counts[m]; ++a) {
      const int64_t at = padded ? m * width + a : atom + a;
      const int32_t species = SpeciesOfAtomicNumber(static_cast<int64_t>(z->values[at]));
      if (species < 0) {
        return Bad(path, absl::StrCat("molecule ", m, ", atom ", a, ": atomic number ", z->values[at],
                                      "; expected 1, 6, 7, 8 or 9 (H, C, N, O, F)"));
      }
      mol.species.push_back(species);
      for (int k = 0; k < 3; ++k) {
        const double x = r->values[at * 3 + k];
        if (!std::isfinite(x)) {
          return Bad(path, absl::StrCat("molecule ", m, ", atom ", a, ": non-finite position"));
        }
        mol.positions.push_back(x);
      }
    }
    atom += counts[m];
    for (const NumericArray* t : targets) mol.targets.push_back(t->values[m]);
    SetBondsFromDistances(mol);
    molecules.push_back(std::move(mol));
  }
  return molecules;
}

absl::StatusOr<std::vector<Molecule>> LoadQm9Sdf(const std::string& sdf_path, const std::string& csv_path,
                                                 const Qm9LoadOptions& options) {
  // The CSV first: its columns decide what each record needs.
  std::vector<std::vector<double>> rows;  // the target columns of each row
  std::map<std::string, size_t> row_of_id;
  bool by_id = false;
  if (!options.target_names.empty()) {
    absl::StatusOr<std::string> csv = ReadText(csv_path);
    if (!csv.ok()) return csv.status();
    std::vector<absl::string_view> lines = absl::StrSplit(*csv, '\n');
    if (lines.empty() || absl::StripAsciiWhitespace(lines[0]).empty()) return Bad(csv_path, "empty; expected a header line");
    std::vector<std::string> header;
    for (absl::string_view h : absl::StrSplit(absl::StripAsciiWhitespace(lines[0]), ',')) {
      header.push_back(std::string(absl::StripAsciiWhitespace(h)));
    }
    std::vector<size_t> columns;
    for (const std::string& name : options.target_names) {
      auto it = std::find_if(header.begin(), header.end(), [&](const std::string& h) { return absl::EqualsIgnoreCase(h, name); });
      if (it == header.end()) {
        return Bad(absl::StrCat(csv_path, ":1"), absl::StrCat("no column '", name, "'; the header names: ",
                                                             absl::StrJoin(header, ", ")));
      }
      columns.push_back(static_cast<size_t>(it - header.begin()));
    }
    auto id_column = std::find_if(header.begin(), header.end(), [](const std::string& h) { return absl::EqualsIgnoreCase(h, "mol_id"); });
    by_id = id_column != header.end();
    for (size_t i = 1; i < lines.size(); ++i) {
      absl::string_view line = absl::StripAsciiWhitespace(lines[i]);
      if (line.empty()) continue;
      std::vector<absl::string_view> cells = absl::StrSplit(line, ',');
      if (cells.size() != header.size()) {
        return Bad(absl::StrCat(csv_path, ":", i + 1), absl::StrCat(cells.size(), " cells; the header has ", header.size()));
      }
      std::vector<double> values;
      for (size_t k = 0; k < columns.size(); ++k) {
        double v = 0;
        if (!ParseDouble(cells[columns[k]], &v)) {
          return Bad(absl::StrCat(csv_path, ":", i + 1), absl::StrCat("column '", header[columns[k]], "': '",
                                                                     cells[columns[k]], "' is not a finite number"));
        }
        values.push_back(v);
      }
      if (by_id) row_of_id[std::string(absl::StripAsciiWhitespace(cells[id_column - header.begin()]))] = rows.size();
      rows.push_back(std::move(values));
    }
  }

  absl::StatusOr<std::string> sdf = ReadText(sdf_path);
  if (!sdf.ok()) return sdf.status();
  std::vector<absl::string_view> lines = absl::StrSplit(*sdf, '\n');
  for (absl::string_view& line : lines) absl::ConsumeSuffix(&line, "\r");
  std::vector<Molecule> molecules;
  size_t at = 0;  // 0-based line index
  auto where = [&sdf_path](size_t line) { return absl::StrCat(sdf_path, ":", line + 1); };
  while (at < lines.size()) {
    // Blank lines at the end of the file end it (a record's title line may be blank itself).
    size_t next_text = at;
    while (next_text < lines.size() && absl::StripAsciiWhitespace(lines[next_text]).empty()) ++next_text;
    if (next_text == lines.size()) break;
    if (options.max_molecules > 0 && static_cast<int64_t>(molecules.size()) >= options.max_molecules) break;
    const size_t record_start = at;
    const size_t record = molecules.size();
    if (at + 4 > lines.size()) return Bad(where(at), absl::StrCat("record ", record + 1, ": ends before its counts line"));
    Molecule mol;
    mol.name = std::string(absl::StripAsciiWhitespace(lines[at]));
    const absl::string_view counts = lines[at + 3];
    if (counts.find("V3000") != absl::string_view::npos) {
      return Bad(where(at + 3), absl::StrCat("record ", record + 1, ": a V3000 molfile; expected V2000"));
    }
    int64_t num_atoms = 0, num_bonds = 0;
    if (!absl::SimpleAtoi(Field(counts, 0, 3), &num_atoms) || !absl::SimpleAtoi(Field(counts, 3, 3), &num_bonds) ||
        num_atoms < 0 || num_bonds < 0) {
      return Bad(where(at + 3), absl::StrCat("record ", record + 1, " ('", mol.name,
                                             "'): expected the counts line (atoms in columns 1-3, bonds in 4-6), got '",
                                             counts.substr(0, 40), "'"));
    }
    at += 4;
    if (at + num_atoms + num_bonds > lines.size()) {
      return Bad(where(record_start), absl::StrCat("record ", record + 1, ": the file ends inside its ", num_atoms,
                                                   " atom and ", num_bonds, " bond lines"));
    }
    for (int64_t a = 0; a < num_atoms; ++a, ++at) {
      const absl::string_view line = lines[at];
      double xyz[3];
      for (int k = 0; k < 3; ++k) {
        if (!ParseDouble(Field(line, 10 * k, 10), &xyz[k])) {
          return Bad(where(at), absl::StrCat("atom ", a + 1, ": expected x, y, z in columns 1-30, got '", line, "'"));
        }
      }
      const absl::string_view symbol = Field(line, 31, 3);
      const int32_t species = SpeciesOfSymbol(symbol);
      if (species < 0) {
        return Bad(where(at), absl::StrCat("atom ", a + 1, ": element '", symbol, "'; expected H, C, N, O or F"));
      }
      mol.species.push_back(species);
      mol.positions.insert(mol.positions.end(), xyz, xyz + 3);
    }
    for (int64_t b = 0; b < num_bonds; ++b, ++at) {
      const absl::string_view line = lines[at];
      int64_t first = 0, second = 0;
      if (!absl::SimpleAtoi(Field(line, 0, 3), &first) || !absl::SimpleAtoi(Field(line, 3, 3), &second) ||
          first < 1 || first > num_atoms || second < 1 || second > num_atoms || first == second) {
        return Bad(where(at), absl::StrCat("bond ", b + 1, ": expected two distinct atoms 1..", num_atoms,
                                           " in columns 1-6, got '", line, "'"));
      }
      mol.edge_src.push_back(static_cast<int32_t>(first - 1));
      mol.edge_dst.push_back(static_cast<int32_t>(second - 1));
      mol.edge_src.push_back(static_cast<int32_t>(second - 1));
      mol.edge_dst.push_back(static_cast<int32_t>(first - 1));
    }
    // Properties ("M  END", data items) up to the record's end.
    while (at < lines.size() && lines[at] != "$$$$") ++at;
    if (at == lines.size()) return Bad(where(record_start), absl::StrCat("record ", record + 1, ": no closing $$$$"));
    ++at;
    if (!options.target_names.empty()) {
      size_t row = record;
      if (by_id) {
        auto it = row_of_id.find(mol.name);
        if (it == row_of_id.end()) {
          return Bad(where(record_start), absl::StrCat("record ", record + 1, " ('", mol.name, "'): no row with mol_id '",
                                                       mol.name, "' in ", csv_path));
        }
        row = it->second;
      } else if (row >= rows.size()) {
        return Bad(csv_path, absl::StrCat("has ", rows.size(), " rows; record ", record + 1, " of ", sdf_path,
                                          " needs one more"));
      }
      mol.targets = rows[row];
    }
    molecules.push_back(std::move(mol));
  }
  return molecules;
}

absl::StatusOr<std::vector<Molecule>> LoadQm9(const std::string& path, const Qm9LoadOptions& options) {
  std::error_code error;
  if (fs::is_directory(path, error)) {
    std::vector<std::string> npz, sdf;
    for (const auto& entry : fs::directory_iterator(path, error)) {
      const std::string file = entry.path().string();
      if (absl::EndsWith(file, ".npz")) npz.push_back(file);
      if (absl::EndsWith(file, ".sdf")) sdf.push_back(file);
    }
    std::sort(npz.begin(), npz.end());
    std::sort(sdf.begin(), sdf.end());
    if (fs::exists(path + "/gdb9.sdf")) sdf = {path + "/gdb9.sdf"};
    if (npz.size() == 1 && sdf.empty()) return LoadQm9Npz(npz[0], options);
    if (npz.empty() && sdf.size() == 1) return LoadQm9Sdf(sdf[0], sdf[0] + ".csv", options);
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a directory with one .npz file, or gdb9.sdf ",
                                                   "and gdb9.sdf.csv (or one other .sdf and its .csv); found ",
                                                   npz.size(), " .npz and ", sdf.size(), " .sdf files"));
  }
  if (absl::EndsWith(path, ".npz")) return LoadQm9Npz(path, options);
  if (absl::EndsWith(path, ".sdf")) return LoadQm9Sdf(path, path + ".csv", options);
  if (!fs::exists(path, error)) return absl::NotFoundError(absl::StrCat(path, ": no such file or directory"));
  return absl::InvalidArgumentError(absl::StrCat(path, ": expected an .npz file, an .sdf file or a directory"));
}

}  // namespace tpserve::nn::data
