"""`sessiond serve invite` printed `s5+http://INVITE@HOST:PORT` for the operator to fill in, though the relay that
serves the data folder knows the address it serves on (it prints it at start). The relay notes it in its data
folder; an invite made there names the whole store URL to give the new device."""

from __future__ import annotations

import json
import os

from conftest import relay_served, run_cli


def test_an_invite_names_the_store_url_of_the_relay_that_serves_its_folder(tmp_path):
    data = str(tmp_path / "relay")
    with relay_served(data) as served:
        url = served["url"]  # s5+http://127.0.0.1:PORT
        res = run_cli(None, "serve", "invite", "--data", data, check=True)
        code = res.stdout.strip()
        host = url.split("://", 1)[1]
        assert f"s5+http://{code}@{host}" in res.stderr and "HOST:PORT" not in res.stderr, res.stderr
        made = json.loads(run_cli(None, "serve", "invite", "--data", data, "--json", check=True).stdout)
        assert made["store_url"] == f"s5+http://{made['invite']}@{host}", made
    # stopped: the address it last served on still names it (a restart on another port notes the new one)
    later = json.loads(run_cli(None, "serve", "invite", "--data", data, "--json", check=True).stdout)
    assert later["store_url"] == f"s5+http://{later['invite']}@{host}", later


def test_an_invite_made_before_any_relay_served_its_folder_leaves_the_address_to_fill_in(tmp_path):
    data = str(tmp_path / "fresh")
    res = run_cli(None, "serve", "invite", "--data", data, check=True)
    assert "HOST:PORT" in res.stderr, res.stderr
    made = json.loads(run_cli(None, "serve", "invite", "--data", data, "--json", check=True).stdout)
    assert made["store_url"] is None, made
    # a noted address that is no relay URL (damaged, or written by hand) is not passed on
    with open(os.path.join(data, "serving-url"), "w") as f:
        f.write("http://elsewhere\nmore\n")
    res = run_cli(None, "serve", "invite", "--data", data, check=True)
    assert "HOST:PORT" in res.stderr and "elsewhere" not in res.stderr, res.stderr
