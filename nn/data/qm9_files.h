// Loaders for the public QM9 formats, into Molecules (molecule.h).
//
// .npz (numpy.savez of the common releases), arrays by key:
//   atomic numbers  "Z" | "charges" | "atomic_numbers"   (1, 6, 7, 8, 9)
//   positions       "R" | "positions" | "coordinates"    (Angstrom)
//   atom counts     "N" | "num_atoms"                    ([num_molecules])
// in one of two layouts: concatenated (Z [sum N], R [sum N, 3], N required, as in DimeNet's
// qm9_eV.npz) or padded (Z [M, max_atoms] with trailing zeros, R [M, max_atoms, 3], N optional, as
// in Cormorant's / torchmd's). Targets: one array [M] (or [M, 1]) per name in target_names,
// matched exactly or else ignoring case ("U0" finds "u0"). Bonds come from distances
// (SetBondsFromDistances).
//
// SDF + CSV (the QM9 release's gdb9.sdf and gdb9.sdf.csv): V2000 molfile records separated by
// "$$$$"; atoms from the atom block (x, y, z in columns 1-30, the symbol in 32-34), bonds both
// ways from the bond block. The CSV's first line names its columns; targets are taken by column
// name (ignoring case), and a record is matched to the row whose "mol_id" equals its title line
// ("gdb_1"), or to the row in the same position when the CSV has no mol_id column.
//
// Errors are INVALID_ARGUMENT naming the file, the line or record, and what was expected (an
// unknown element, a malformed number, a missing key or column); NOT_FOUND for a missing file.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nn/data/molecule.h"

namespace tpserve::nn::data {

struct Qm9LoadOptions {
  // Targets per molecule, in this order (empty: none are read). QM9's first four properties.
  std::vector<std::string> target_names = {"mu", "alpha", "homo", "lumo"};
  // At most this many molecules (0: all), the first ones of the file.
  int64_t max_molecules = 0;
};

absl::StatusOr<std::vector<Molecule>> LoadQm9Npz(const std::string& path, const Qm9LoadOptions& options = {});
absl::StatusOr<std::vector<Molecule>> LoadQm9Sdf(const std::string& sdf_path, const std::string& csv_path,
                                                 const Qm9LoadOptions& options = {});
// `path`: an .npz file; an .sdf file (its CSV is <path>.csv); or a directory holding one .npz,
// or gdb9.sdf and gdb9.sdf.csv (or a single other *.sdf and its .csv).
absl::StatusOr<std::vector<Molecule>> LoadQm9(const std::string& path, const Qm9LoadOptions& options = {});

}  // namespace tpserve::nn::data
