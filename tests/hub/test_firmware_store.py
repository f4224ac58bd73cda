"""The hub's firmware store (hub/firmware.py): publish checks, crash safety, the readers, and
a bundle arriving as a tar archive. Bundles are real ones, `firmware build --source` of the
repository's firmware (tools/bundle.py; a copy, no compiler, a fraction of a second)."""

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile

import pytest
from smartpark.hub import firmware
from smartpark.tools import bundle, cli


def build(tmp_path, version, name=None):
    out = str(tmp_path / (name or ("b-" + version)))
    bundle.build_bundle(out=out, source=True, quiet=True, version=version)
    return out


def rewrite(bundle_dir, edit):
    """Change the manifest of a bundle (edit(manifest) -> None)."""
    path = os.path.join(bundle_dir, "manifest.json")
    with open(path) as f:
        m = json.load(f)
    edit(m)
    with open(path, "w") as f:
        json.dump(m, f)


def stored_tree(data):
    root = firmware.store_dir(data)
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


def tar_of(bundle_dir, prefix="firmware"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(bundle_dir, arcname=prefix)
    return buf.getvalue()


def test_publish_verifies_copies_and_lists(tmp_path):
    src = build(tmp_path, "1.0.0")
    data = str(tmp_path / "data")
    assert firmware.publish(data, src) == ("1.0.0", True)
    assert firmware.publish(data, src) == ("1.0.0", False)  # the same bundle: a no-op
    m = firmware.get(data, "1.0.0")
    with open(os.path.join(src, "manifest.json"), "rb") as f:
        assert firmware.manifest_bytes(data, "1.0.0") == f.read()
    for e in m["files"]:
        full, entry = firmware.file_path(data, "1.0.0", e["path"])
        with open(full, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == entry["sha256"]
        assert stat.S_IMODE(os.stat(full).st_mode) == 0o444
    [row] = firmware.versions(data)
    assert row["version"] == "1.0.0" and row["board"] == "esp32" and row["kind"] == "source"
    assert row["files"] == len(m["files"]) and row["total_size"] == m["total_size"]
    assert stored_tree(data) == ["1.0.0"]
    # only paths the manifest lists are reachable
    for bad in ("manifest.json", "../1.0.0/main.py", "/etc/passwd", "", "lib//x", "nope.py"):
        assert firmware.file_path(data, "1.0.0", bad) is None, bad
    assert firmware.get(data, "../keys") is None and firmware.get(data, "2.0.0") is None


def _damage_cases(src):
    first = json.load(open(os.path.join(src, "manifest.json")))["files"][0]["path"]

    def truncate(b):
        p = os.path.join(b, "manifest.json")
        raw = open(p, "rb").read()
        open(p, "wb").write(raw[:len(raw) // 2])

    def missing(b):
        os.unlink(os.path.join(b, first))

    def flipped(b):  # the same size, other bytes
        p = os.path.join(b, first)
        raw = bytearray(open(p, "rb").read())
        raw[0] ^= 1
        open(p, "wb").write(bytes(raw))

    def longer(b):
        open(os.path.join(b, first), "ab").write(b"#")

    def link(b):
        p = os.path.join(b, first)
        os.rename(p, p + ".real")
        os.symlink(os.path.basename(p) + ".real", p)

    def traversal(b):
        rewrite(b, lambda m: m["files"][0].update(path="../../escape.py"))

    def no_version(b):
        rewrite(b, lambda m: m.update(firmware_version="1.0/../x"))

    def bad_digest(b):
        rewrite(b, lambda m: m["files"][0].update(sha256="00" * 8))

    return [(truncate, "not valid JSON"), (missing, first + " is missing"),
            (flipped, first + " does not match its SHA-256"), (longer, first + " has"),
            (link, first + " is a link"), (traversal, "bad path '../../escape.py'"),
            (no_version, "bad firmware_version"), (bad_digest, "bad sha256")]


def test_publish_refuses_damaged_bundles_and_stores_nothing(tmp_path):
    src = build(tmp_path, "1.0.1")
    data = str(tmp_path / "data")
    for i, (damage, text) in enumerate(_damage_cases(src)):
        b = str(tmp_path / ("bad%d" % i))
        shutil.copytree(src, b)
        damage(b)
        with pytest.raises(firmware.FirmwareError) as e:
            firmware.publish(data, b)
        assert e.value.status == 400 and text in str(e.value), (damage.__name__, str(e.value))
        assert stored_tree(data) == [], damage.__name__
    with pytest.raises(firmware.FirmwareError, match="no manifest.json"):
        firmware.publish(data, str(tmp_path))


def test_a_version_names_one_bundle_for_good(tmp_path):
    src = build(tmp_path, "1.1.0")
    data = str(tmp_path / "data")
    firmware.publish(data, src)
    other = str(tmp_path / "other")
    shutil.copytree(src, other)
    path = os.path.join(other, "main.py")
    with open(path, "a") as f:
        f.write("# changed\n")
    rewrite(other, lambda m: [e.update(size=os.path.getsize(path),
                                       sha256=bundle.sha256_file(path))
                              for e in m["files"] if e["path"] == "main.py"])
    firmware.verify(other)  # a sound bundle, only not the stored one
    with pytest.raises(firmware.FirmwareError) as e:
        firmware.publish(data, other)
    assert e.value.status == 409 and "1.1.0 is already published" in str(e.value)
    with open(firmware.file_path(data, "1.1.0", "main.py")[0]) as f:
        assert "# changed" not in f.read()


def test_crashed_publish_leaves_no_version(tmp_path, monkeypatch):
    src = build(tmp_path, "1.2.0")
    data = str(tmp_path / "data")

    def crash(*_a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(firmware.os, "rename", crash)
    with pytest.raises(OSError):
        firmware.publish(data, src)
    monkeypatch.undo()
    assert stored_tree(data) == [] and firmware.versions(data) == []
    # a temporary directory a killed publish left behind is skipped, then cleaned
    stale = os.path.join(firmware.store_dir(data), ".tmp-1.2.0-dead")
    os.makedirs(stale)
    os.utime(stale, (1, 1))
    assert firmware.versions(data) == []
    assert firmware.publish(data, src) == ("1.2.0", True)
    assert stored_tree(data) == ["1.2.0"]


def test_tar_upload_publishes_and_refuses_unsafe_members(tmp_path):
    src = build(tmp_path, "1.3.0")
    data = str(tmp_path / "data")
    assert firmware.publish_tar(data, tar_of(src)) == ("1.3.0", True)
    assert firmware.publish_tar(data, tar_of(src, prefix=".")) == ("1.3.0", False)

    def evil(kind):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            tf.add(src, arcname="firmware")
            info = tarfile.TarInfo({"abs": "/tmp/evil", "dots": "firmware/../../evil",
                                    "sym": "firmware/evil", "hard": "firmware/evil2",
                                    "dev": "firmware/dev"}[kind])
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, "firmware/main.py"
            elif kind == "dev":
                info.type = tarfile.CHRTYPE
            body = b"x"
            info.size = len(body) if info.type == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(body) if info.size else None)
        return buf.getvalue()

    for kind, text in (("abs", "absolute path"), ("dots", "'..'"), ("sym", "is a link"),
                       ("hard", "is a link"), ("dev", "not a file or directory")):
        with pytest.raises(firmware.FirmwareError, match=text):
            firmware.publish_tar(data, evil(kind))
    whole = tar_of(src)
    with pytest.raises(firmware.FirmwareError, match="not a readable tar archive"):
        firmware.publish_tar(data, b"not a tar at all" * 40)
    for cut in (len(whole) // 3, 700):  # cut short: in a file's data or in its header
        with pytest.raises(firmware.FirmwareError) as e:
            firmware.publish_tar(data, whole[:cut])
        # which member the cut lands in depends on the order the directory listed them:
        # before the manifest the archive has none, after it a file is missing or cut
        assert any(w in str(e.value) for w in ("truncated", "missing", "no manifest.json")), \
            str(e.value)
    assert stored_tree(data) == ["1.3.0"]


# -- image bundles (MicroPython itself, tools/bundle.py --image) --------------------------------

def app_image_head(n=4096):
    """The start of an ESP-IDF app image: esp_image_header_t (magic 0xE9, 2 segments), the first
    segment header, esp_app_desc_t's magic word at byte 32; then arbitrary bytes."""
    return bytes([0xE9, 2]) + bytes(30) + (0xABCD5432).to_bytes(4, "little") + os.urandom(n)


def test_image_bundle_builds_publishes_and_refuses_what_is_no_app_image(tmp_path):
    img = tmp_path / "micropython.bin"
    img.write_bytes(app_image_head())
    out = str(tmp_path / "img")
    assert cli.main(["firmware", "build", "--image", str(img), "--version", "mp-1.29.0",
                     "--out", out, "-q"]) == 0
    data = str(tmp_path / "data")
    assert firmware.publish(data, out) == ("mp-1.29.0", True)
    m = firmware.get(data, "mp-1.29.0")
    assert m["kind"] == "image" and m["board"] == "esp32" and m["image"]["chip_id"] == 0
    assert [e["path"] for e in m["files"]] == ["micropython.bin"] and "romfs" not in m
    assert firmware.versions(data)[0]["kind"] == "image"
    with pytest.raises(bundle.BundleError, match="MicroPython image, not the node's code"):
        bundle.load_manifest(out)   # nothing to flash onto a filesystem
    assert bundle.load_manifest(out, image=True)["kind"] == "image"
    # the builder: not an image, the whole flash (an image, but no app), no --version
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x7fELF" + bytes(100))
    boot = tmp_path / "firmware.bin"
    boot.write_bytes(bytes([0xE9, 3]) + bytes(200))
    for path, why in ((junk, "byte 0 is 0x7f, not 0xE9"), (boot, "firmware.bin"),
                      (tmp_path / "none.bin", "cannot read")):
        with pytest.raises(bundle.BundleError, match=why):
            bundle.build_image_bundle(str(path), out=str(tmp_path / "x"), version="x1", quiet=True)
    with pytest.raises(bundle.BundleError, match="needs --version"):
        bundle.build_image_bundle(str(img), out=str(tmp_path / "x"), quiet=True)
    # the store: one file and an app image, or nothing
    two = str(tmp_path / "two")
    shutil.copytree(out, two)
    shutil.copy(str(img), os.path.join(two, "extra.bin"))
    rewrite(two, lambda m: m.update(firmware_version="mp-2", files=m["files"] + [
        dict(m["files"][0], path="extra.bin")]))
    with pytest.raises(firmware.FirmwareError, match="exactly one file"):
        firmware.publish(data, two)
    swapped = str(tmp_path / "swapped")
    shutil.copytree(out, swapped)
    with open(os.path.join(swapped, "micropython.bin"), "wb") as f:
        f.write(b"\x7fELF" + bytes(100))

    def edit(m):
        m.update(firmware_version="mp-3")
        m["files"][0].update(size=104, sha256=hashlib.sha256(b"\x7fELF" + bytes(100)).hexdigest())

    rewrite(swapped, edit)
    with pytest.raises(firmware.FirmwareError, match="micropython.bin: not an ESP32 app image"):
        firmware.publish(data, swapped)
    assert stored_tree(data) == ["mp-1.29.0"]
