#!/usr/bin/env python3
"""Static checks of a Dockerfile, for CI (no image build, no hadolint: neither is on CI's machine).

  check_dockerfile.py REPO_ROOT DOCKERFILE [--main server/main.cc]

- every RUN step (shell form, continuation lines joined) is written out with the stage's SHELL and
  checked with `bash -n` and shellcheck;
- COPY/ADD sources from the build context exist;
- every stage FROM names debian:12, a build arg, or an earlier stage;
- for the tpserve image (--main given): EXPOSE matches the default ports in server/main.cc, the
  ENTRYPOINT/HEALTHCHECK name binaries that the runtime stage copies, the runtime stage runs as a
  non-root USER, has a VOLUME for the model repository and the OCI labels, and no compiler package
  is installed in it.
Exit 1 with one line per problem.
"""
import json
import os
import re
import subprocess
import sys
import tempfile


def instructions(text):
    """(line number, instruction, arguments) with continuation lines joined and comments dropped."""
    out, buf, start = [], "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = number
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1]  # Docker joins continuation lines without a newline
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def main(argv):
    root, dockerfile = argv[1], argv[2]
    main_cc = argv[argv.index("--main") + 1] if "--main" in argv else None
    path = os.path.join(root, dockerfile)
    problems = []
    steps = instructions(open(path).read())
    stages, shell, args = [], ["/bin/sh", "-c"], set()
    runtime = None
    checked = 0
    for number, word, rest in steps:
        where = "%s:%d" % (dockerfile, number)
        if word == "ARG":
            args.add(rest.split("=")[0])
        elif word == "FROM":
            parts = rest.split()
            image = parts[0]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            if not (image == "debian:12" or image.startswith("${") or image in stages):
                problems.append("%s: FROM %s: expected debian:12, a build arg or an earlier stage" % (where, image))
            stages.append(name)
            shell = ["/bin/sh", "-c"]
            runtime = {"name": name, "copies": [], "user": None, "volume": False, "labels": "", "exposed": [],
                       "entrypoint": None, "healthcheck": "", "runs": ""}
        elif word == "SHELL":
            shell = json.loads(rest)
        elif word == "RUN":
            if rest.startswith("["):
                continue
            runtime["runs"] += rest + "\n"
            checked += 1
            with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
                interpreter = shell[0]
                flags = [a for a in shell[1:] if a != "-c"]
                f.write("#!%s\n# %s\nset %s\n%s\n" % (interpreter, where, " ".join(flags) or "-e", rest))
                script = f.name
            try:
                syntax = subprocess.run([os.path.basename(interpreter) if interpreter.endswith("bash") else "sh", "-n",
                                         script], capture_output=True, text=True)
                if syntax.returncode:
                    problems.append("%s: RUN does not parse: %s" % (where, syntax.stderr.strip()))
                # SC2086 (word splitting of $VAR) is how build args are meant to be used in RUN.
                lint = subprocess.run(["shellcheck", "-S", "warning", "-e", "SC2086", script],
                                      capture_output=True, text=True)
                if lint.returncode:
                    problems.append("%s: shellcheck:\n%s" % (where, lint.stdout.strip()))
            finally:
                os.unlink(script)
        elif word in ("COPY", "ADD"):
            parts = [p for p in rest.split() if not p.startswith("--")]
            if "--from=" in rest:
                runtime["copies"].append(parts[-1])
                continue
            for source in parts[:-1]:
                if not os.path.exists(os.path.join(root, os.path.dirname(dockerfile), source)):
                    problems.append("%s: COPY source %s is not in the build context" % (where, source))
        elif word == "USER":
            runtime["user"] = rest
        elif word == "VOLUME":
            runtime["volume"] = rest
        elif word == "LABEL":
            runtime["labels"] += rest
        elif word == "EXPOSE":
            runtime["exposed"] += rest.split()
        elif word == "ENTRYPOINT":
            runtime["entrypoint"] = json.loads(rest)
        elif word == "HEALTHCHECK":
            runtime["healthcheck"] = rest
    print("%s: %d stages, %d RUN steps checked with bash -n and shellcheck" % (dockerfile, len(stages), checked))
    if main_cc:
        text = open(os.path.join(root, main_cc)).read()
        ports = [re.search(r'ABSL_FLAG\(std::string, %s, "[^"]*:(\d+)"' % flag, text) for flag in
                 ("listen", "metrics_address")]
        want = sorted(m.group(1) for m in ports if m)
        if len(want) != 2:
            problems.append("%s: cannot find the default ports" % main_cc)
        if sorted(p.split("/")[0] for p in runtime["exposed"]) != want:
            problems.append("runtime stage EXPOSE %s, server defaults %s" % (runtime["exposed"], want))
        if not runtime["user"] or runtime["user"].split(":")[0] in ("root", "0"):
            problems.append("runtime stage must run as a non-root USER")
        if "/models" not in str(runtime["volume"]):
            problems.append("runtime stage has no VOLUME /models")
        for label in ("version", "revision", "source"):
            if "org.opencontainers.image.%s" % label not in runtime["labels"]:
                problems.append("runtime stage lacks label org.opencontainers.image.%s" % label)
        if not runtime["entrypoint"] or not runtime["entrypoint"][0].endswith("/tpserve"):
            problems.append("ENTRYPOINT must start tpserve")
        if "tpctl" not in runtime["healthcheck"] or "health" not in runtime["healthcheck"]:
            problems.append("HEALTHCHECK must run `tpctl health`")
        if not any(c.startswith("/usr/local/bin") for c in runtime["copies"]):
            problems.append("runtime stage copies no binaries into /usr/local/bin")
        for compiler in ("build-essential", "g++", "gcc", "cmake", "nvcc", "-dev"):
            if re.search(r"install[^\n]*\s%s\b" % re.escape(compiler), runtime["runs"]):
                problems.append("runtime stage installs %s" % compiler)
    for p in problems:
        print("ERROR " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
