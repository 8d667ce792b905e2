"""CellStore: rows keyed by what made them, one order, atomic saves, resume, config checked."""

import json

import pytest

import subnet
from subnet.cells import CellStore


def _key(row):
    return (row["method"], row["seed"])


def _order(row):
    return (row["seed"], row["method"])


def _rows(*pairs):
    return [{"method": m, "seed": s, "accuracy": 0.5 + s / 10} for m, s in pairs]


def test_rows_are_kept_in_one_order_whatever_order_they_arrive_in(tmp_path):
    batches = [_rows(("b", 1)), _rows(("a", 0), ("b", 0)), _rows(("a", 1))]
    files = []
    for name, arrival in (("one", batches), ("other", batches[::-1])):
        store = CellStore(tmp_path / f"{name}.json", key=_key, order=_order)
        for batch in arrival:
            store.add(batch)
        assert [_key(r) for r in store.rows] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
        files.append((tmp_path / f"{name}.json").read_bytes())
    assert files[0] == files[1]
    assert ("a", 1) in store and ("c", 0) not in store and len(store) == 4
    assert store.get(("b", 0))["accuracy"] == 0.5 and store.get(("c", 0)) is None


def test_each_batch_is_saved_and_a_new_store_resumes_from_the_file(tmp_path):
    path = tmp_path / "rows.json"
    store = CellStore(path, key=_key, order=_order, config={"budgets": [0.5]}, indent=1)
    assert not store.resumed and not path.exists()
    store.fields["dense"] = {"accuracy": 0.9}
    store.add(_rows(("a", 0)))
    data = json.loads(path.read_text())
    assert list(data) == ["dense", "config", "rows"] and data["rows"] == store.rows
    assert path.read_text() == json.dumps(data, indent=1)
    again = CellStore(path, key=_key, order=_order, config={"budgets": [0.5]}, indent=1)
    assert again.resumed and again.rows == store.rows and again.fields == store.fields
    assert ("a", 0) in again
    again.add(_rows(("a", 0)) + _rows(("b", 0)))  # a row with a stored key replaces it
    assert [_key(r) for r in again.rows] == [("a", 0), ("b", 0)]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_without_a_config_the_file_is_the_list_of_rows(tmp_path):
    path = tmp_path / "rows.json"
    CellStore(path, key=_key).add(_rows(("a", 0), ("b", 0)))
    assert json.loads(path.read_text()) == _rows(("a", 0), ("b", 0))
    assert CellStore(path, key=_key).rows == _rows(("a", 0), ("b", 0))
    memory = CellStore(None, key=_key)
    memory.add(_rows(("a", 0)))
    assert memory.save() is None and len(memory) == 1


def test_a_file_made_with_other_settings_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "c.json"
    CellStore(path, key=_key, config={"seeds": [0]}).add(_rows(("a", 0)))
    before = path.read_bytes()
    with pytest.raises(subnet.InputError) as error:
        CellStore(path, key=_key, config={"seeds": [0, 1]})
    assert str(error.value) == (f"{path} holds a comparison with other settings; choose "
                                "another file or delete it to start again.")
    with pytest.raises(subnet.InputError, match="holds a trajectory grid with other"):
        CellStore(str(path), key=_key, config={"seeds": [1]}, what="trajectory grid")
    assert path.read_bytes() == before


def test_an_unreadable_or_foreign_file_is_an_input_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(subnet.InputError, match="Could not read the rows in .*delete it"):
        CellStore(path, key=_key)
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(subnet.InputError, match="list of rows"):
        CellStore(path, key=_key)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(subnet.InputError, match="with their settings"):
        CellStore(path, key=_key, config={})
    with pytest.raises(subnet.InputTypeError, match="`order`"):
        CellStore(None, key=_key, order="seed")


def test_heavy_files_are_written_atomically_beside_the_rows(tmp_path):
    store = CellStore(tmp_path / "c.json", key=_key)
    path = store.write_file("a_0.5_0.keras", b"model bytes")
    assert path == tmp_path / "a_0.5_0.keras" and path.read_bytes() == b"model bytes"
    elsewhere = CellStore(tmp_path / "c.json", key=_key, files=tmp_path / "models")
    assert elsewhere.write_file("m.keras", b"x") == tmp_path / "models" / "m.keras"
    for name in ("../m.keras", "sub/m.keras", ""):
        with pytest.raises(subnet.InputError, match="plain file name"):
            store.write_file(name, b"x")
    with pytest.raises(subnet.InputError, match="no folder"):
        CellStore(None, key=_key).write_file("m.keras", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_0.5_0.keras", "models"]
