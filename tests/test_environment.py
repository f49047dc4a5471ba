"""requirements.txt and environment.yml describe the same environment, package by package."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)")


def _pins(lines):
    return {m.group(1).lower().replace("_", "-"): m.group(2)
            for m in map(PIN.match, lines) if m}


def test_environment_yml_agrees_with_requirements():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert req, "no pins found in requirements.txt"
    assert env == req


def test_gpu_extra_is_optional():
    req = (ROOT / "requirements.txt").read_text()
    assert "mamba-ssm" not in re.sub(r"#.*", "", req)
    assert "causal-conv1d" not in re.sub(r"#.*", "", req)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'cuda = \[.*mamba-ssm', pyproject)


def test_torch_is_the_cpu_pin():
    assert _pins((ROOT / "requirements.txt").read_text().splitlines())["torch"] == "2.13.0"
