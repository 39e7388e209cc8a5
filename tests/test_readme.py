"""The README's commands and Python blocks work as written."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_ci_runs_the_readme_test_command():
    test_cmd = blocks("bash")[1].strip()
    assert "pytest" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines(), "'.ci/run' must run exactly the README's test command"


def test_first_command_runs_the_demo():
    assert blocks("bash")[0].strip().endswith("neurogen demo")


def test_python_blocks_execute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = blocks("python")
    assert code, "README has Python examples"
    for src in code:
        exec(compile(src, "README.md", "exec"), {"__name__": "readme"})


def test_readme_cli_examples_run():
    import subprocess
    import sys
    lines = [ln.split("#")[0].strip() for block in blocks("bash")[2:] for ln in block.splitlines()]
    cmds = [ln for ln in lines if ln.startswith("neurogen ")]
    assert len(cmds) >= 4
    for cmd in cmds:
        args = cmd.split()[1:]
        if args[0] == "check":
            # one model and dtype here; the full check is tested elsewhere
            args = ["check", "izhikevich", *args[1:], "--dtype", "float32"]
        proc = subprocess.run([sys.executable, "-m", "neurogen", *args], capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
        assert proc.stdout.strip(), cmd
