"""`sessiond start` naming a store other than the one the home syncs with is refused (nothing changed), and its
message says where the home's store comes from and how the other one was asked for, so that the way it names,
to start without it, is one the user can take."""

from __future__ import annotations

import json
import os

from conftest import run_cli


def _refused(home: str, *argv: str) -> str:
    res = run_cli(home, "start", *argv, "--json")
    assert res.returncode == 1, res
    assert not os.path.exists(os.path.join(home, "sessiond.sock")) or "started" not in res.stdout, res
    return json.loads(res.stdout)["error"]["message"]


def test_a_start_on_another_store_given_by_file_or_after_a_move_says_so(home, tmp_path):
    """A home moved once (`start --change-store`) and started again on a store in a file (`--store-file`, as the
    README's relay set-up has it) was told the store was "remembered from its first start" (it was the move's)
    and was asked for "(--store)", with "start without --store to keep it": the user gave no --store. The
    message names the home's record of its store and the option the other store came by."""
    first = "file://" + str(tmp_path / "first-store")
    second = "file://" + str(tmp_path / "second-store")
    third = "file://" + str(tmp_path / "third-store")
    run_cli(home, "start", "--store", first, check=True)
    run_cli(home, "stop", check=True)
    run_cli(home, "start", "--store", second, "--change-store", check=True)  # the home moves to the second
    run_cli(home, "stop", check=True)
    url_file = tmp_path / "store-url.txt"
    url_file.write_text(third + "\n")
    message = _refused(home, "--store-file", str(url_file))
    assert "first start" not in message, message  # the second store was remembered at the move, not then
    assert os.path.join(home, "store-url") in message, message
    assert f"not {third} (--store-file)" in message and "start without --store-file to keep it" in message, message
    message = _refused(home, "--store", third)
    assert f"not {third} (--store)" in message and "start without --store to keep it" in message, message
    # nothing changed: the home starts on the store it syncs with
    run_cli(home, "start", check=True)
    try:
        status = json.loads(run_cli(home, "status", "--json", check=True).stdout)
        assert status["store"] == second, status
    finally:
        run_cli(home, "stop", check=True)
