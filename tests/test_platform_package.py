import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_torch_stdlib_platform_and_project_settings_work_in_one_process():
    code = (
        "import torch, platform, platform.settings as s; "
        "print(platform.system(), platform.python_version(), torch.__version__, s.ROOT_URLCONF)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    system, python_version, torch_version, urlconf = result.stdout.split()
    assert system == "Linux"
    assert python_version.startswith("3.")
    assert torch_version.startswith("2.13")
    assert urlconf == "platform.urls"
