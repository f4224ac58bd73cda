"""The hub's firmware store: verified copies of firmware bundles, one directory per version.

Layout: `<data_dir>/firmware/<version>/` holds a bundle as `smartpark firmware
build` writes it (tools/bundle.py): manifest.json and every file it lists
(device path, size, SHA-256), code.romfs when the manifest names one.

Kinds: "mpy" and "source" bundles hold the node's code (files on its
filesystem); an "image" bundle holds MicroPython itself, for a full-image
update into an app partition (firmware/otaimage.py): exactly one file, an
ESP-IDF app image (app_image_error()), and no ROMFS image.

`publish(data_dir, bundle_dir)` checks the manifest (format, version string,
safe relative paths, sizes, SHA-256 digests), then checks every file it
lists against it (a regular file, not a link; the size; the SHA-256), then
copies the bundle into a temporary directory beside the store's versions,
hashing each file again as it is written, and renames that directory into
place: a crash leaves either the whole version or none (a `.tmp-*`
directory is skipped by every reader and removed by a later publish). A
version already in the store is accepted again only with the same content
(the same files, sizes and digests, board and kind); different content under
a version name it holds is refused (FirmwareError, status 409): a version
names one set of bytes for good, because nodes resume downloads by it.

At rest: directories 0755 and files 0444 (read-only; the hub reads them, no
part of the hub writes them after the rename), and each file's SHA-256 in
the manifest, which the node checks after its download. In transit: OSCORE
(hub/coap/oscore_site.py) authenticates the hub to the node, so a node that
trusts its hub needs no signature on the manifest itself.

`publish_tar(data_dir, data)`: the same from a tar archive of the bundle
directory (POST /api/firmware): regular files and directories only (no
links, devices, absolute paths or ".." segments), extracted into a private
temporary directory, then publish(). The archive holds the bundle's files at
its top level or inside one top-level directory.

Readers: `versions()` (the list), `get(version)` (the manifest dict),
`manifest_bytes(version)` (as stored), `file_path(version, path)` (only a
path the manifest lists, so no request can reach outside the bundle).
"""

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time

STORE_DIR = "firmware"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
MAX_MANIFEST = 1 << 20  # bytes; a real one is a few KB
MAX_FILES = 2000
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,31}$")  # tools/bundle.py's rule
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DIR_MODE = 0o755
FILE_MODE = 0o444
STALE_TMP = 3600.0  # s; a .tmp-* directory older than this is a crashed publish
MAX_UPLOAD = 32 << 20  # bytes of a tar archive (POST /api/firmware)
IMAGE_MAGIC = 0xE9  # esp_image_header_t.magic: byte 0 of an ESP-IDF image
APP_DESC_MAGIC = 0xABCD5432  # esp_app_desc_t.magic_word: at byte 32 of an app image
IMAGE_HEAD = 36  # bytes app_image_error() looks at


class FirmwareError(Exception):
    """A bundle the store refuses: `status` 400 (malformed or damaged) or 409 (the version
    exists with other content); the message names what was wrong."""

    def __init__(self, message, status=400):
        Exception.__init__(self, message)
        self.status = status


def store_dir(data_dir):
    return os.path.join(data_dir, STORE_DIR)


def valid_version(version):
    return isinstance(version, str) and bool(VERSION_RE.match(version))


def safe_path(path):
    """True for a relative device path with no empty, "." or ".." segment."""
    if not isinstance(path, str) or not path or len(path) > 255:
        return False
    if path.startswith("/") or "\\" in path or "\x00" in path:
        return False
    return all(seg not in ("", ".", "..") for seg in path.split("/"))


def _entry_error(entry, where):
    if not isinstance(entry, dict):
        return "%s is not an object" % where
    path = entry.get("path")
    if not safe_path(path):
        return "%s has a bad path %r (relative, no '..', no empty segment)" % (where, path)
    if path == MANIFEST:
        return "%s: a bundle file cannot be named %s" % (where, MANIFEST)
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "%s (%s) has a bad size %r" % (where, path, size)
    sha = entry.get("sha256")
    if not isinstance(sha, str) or not _SHA256_RE.match(sha):
        return "%s (%s) has a bad sha256 %r" % (where, path, sha)
    return None


def app_image_error(head):
    """None when `head`, the first IMAGE_HEAD bytes of a file, starts an ESP-IDF app image, as
    MicroPython's micropython.bin is: esp_image_header_t (24 bytes: magic 0xE9, 1 to 16
    segments), the first segment's 8-byte header, then esp_app_desc_t, whose magic word
    0xABCD5432 is at byte 32. Else what the file is not (also the bundle builder's check)."""
    if len(head) < IMAGE_HEAD:
        return "not an ESP32 app image: %d bytes" % len(head)
    if head[0] != IMAGE_MAGIC:
        return "not an ESP32 app image: byte 0 is 0x%02x, not 0xE9" % head[0]
    if not 1 <= head[1] <= 16:
        return "not an ESP32 app image: %d segments" % head[1]
    if int.from_bytes(head[32:36], "little") != APP_DESC_MAGIC:
        return ("an ESP32 image but not an app (no app description at byte 32): a bootloader, "
                "or the whole flash (firmware.bin)? The app alone is micropython.bin")
    return None


def entries(manifest):
    """Every file the manifest lists: its files, then the ROMFS image when it has one."""
    out = manifest["files"][:]
    if manifest.get("romfs"):
        out.append(manifest["romfs"])
    return out


def parse_manifest(raw):
    """The manifest dict of manifest.json bytes, checked; raises FirmwareError (400)."""
    if len(raw) > MAX_MANIFEST:
        raise FirmwareError("%s is too large (%d bytes)" % (MANIFEST, len(raw)))
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FirmwareError("%s is not valid JSON (truncated?): %s" % (MANIFEST, e)) from None
    if not isinstance(manifest, dict):
        raise FirmwareError("%s is not a JSON object" % MANIFEST)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise FirmwareError("%s: unknown format %r (expected %d)"
                            % (MANIFEST, manifest.get("format"), MANIFEST_FORMAT))
    version = manifest.get("firmware_version")
    if not valid_version(version):
        raise FirmwareError("%s: bad firmware_version %r" % (MANIFEST, version))
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise FirmwareError("%s: no file list" % MANIFEST)
    if len(files) > MAX_FILES:
        raise FirmwareError("%s: too many files (%d)" % (MANIFEST, len(files)))
    romfs = manifest.get("romfs")
    if manifest.get("kind") == "image" and (len(files) != 1 or romfs is not None):
        raise FirmwareError("%s: an image bundle lists exactly one file, the app image, and no "
                            "romfs (this one: %d files%s)"
                            % (MANIFEST, len(files), ", a romfs" if romfs is not None else ""))
    checks = [(e, "files[%d]" % i) for i, e in enumerate(files)]
    if romfs is not None:
        checks.append((romfs, "romfs"))
    seen = set()
    for entry, where in checks:
        bad = _entry_error(entry, where)
        if bad:
            raise FirmwareError("%s: %s" % (MANIFEST, bad))
        if entry["path"] in seen:
            raise FirmwareError("%s: %s lists %s twice" % (MANIFEST, where, entry["path"]))
        seen.add(entry["path"])
    return manifest


def sha256_file(path):
    """The hex SHA-256 of a file, read in 64 KB blocks (also the bundle builder's)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(65536), b""):
            h.update(block)
    return h.hexdigest()


def _inside(root, path):
    root = os.path.realpath(root)
    return os.path.realpath(path).startswith(root + os.sep)


def verify(bundle_dir):
    """(manifest dict, manifest bytes) of a bundle directory whose every listed file is a
    regular file (not a link, not outside the directory) of the listed size and SHA-256.
    Raises FirmwareError (400) naming the first problem."""
    mpath = os.path.join(bundle_dir, MANIFEST)
    if not os.path.isdir(bundle_dir):
        raise FirmwareError("%s is not a directory" % bundle_dir)
    if os.path.islink(mpath) or not os.path.isfile(mpath):
        raise FirmwareError("no %s in the bundle" % MANIFEST)
    with open(mpath, "rb") as f:
        raw = f.read(MAX_MANIFEST + 1)
    manifest = parse_manifest(raw)
    for e in entries(manifest):
        full = os.path.join(bundle_dir, *e["path"].split("/"))
        if os.path.islink(full) or not _inside(bundle_dir, full):
            raise FirmwareError("%s is a link or leads outside the bundle" % e["path"])
        if not os.path.isfile(full):
            raise FirmwareError("%s is missing from the bundle" % e["path"])
        size = os.path.getsize(full)
        if size != e["size"]:
            raise FirmwareError("%s has %d bytes, the manifest says %d"
                                % (e["path"], size, e["size"]))
        if sha256_file(full) != e["sha256"]:
            raise FirmwareError("%s does not match its SHA-256 in the manifest" % e["path"])
        if manifest.get("kind") == "image":
            with open(full, "rb") as f:
                bad = app_image_error(f.read(IMAGE_HEAD))
            if bad:
                raise FirmwareError("%s: %s" % (e["path"], bad))
    return manifest, raw


def _content(manifest):
    """What makes two bundles of one version the same bundle."""
    return (sorted((e["path"], e["size"], e["sha256"]) for e in entries(manifest)),
            manifest.get("board"), manifest.get("kind"))


def _copy(bundle_dir, tmp, manifest, raw):
    for e in entries(manifest):
        src = os.path.join(bundle_dir, *e["path"].split("/"))
        dest = os.path.join(tmp, *e["path"].split("/"))
        os.makedirs(os.path.dirname(dest), mode=DIR_MODE, exist_ok=True)
        h = hashlib.sha256()
        with open(src, "rb") as fi, open(dest, "wb") as fo:
            for block in iter(lambda fi=fi: fi.read(65536), b""):
                h.update(block)
                fo.write(block)
            fo.flush()
            os.fsync(fo.fileno())
        if h.hexdigest() != e["sha256"]:  # changed between the check and the copy
            raise FirmwareError("%s changed while it was copied" % e["path"])
        os.chmod(dest, FILE_MODE)
    mdest = os.path.join(tmp, MANIFEST)
    with open(mdest, "wb") as fo:
        fo.write(raw)
        fo.flush()
        os.fsync(fo.fileno())
    os.chmod(mdest, FILE_MODE)


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_tree(path):
    """rmtree of a store directory whose files are read-only."""
    def onerror(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o600)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=onerror)


def _clean_stale(root, now):
    for name in os.listdir(root):
        if name.startswith(".tmp-"):
            p = os.path.join(root, name)
            try:
                if now - os.stat(p).st_mtime > STALE_TMP:
                    _remove_tree(p)
            except OSError:
                pass


def publish(data_dir, bundle_dir):
    """Verify the bundle in `bundle_dir` and store it; returns (version, created): created
    is False when the store held the same bundle already. Raises FirmwareError."""
    manifest, raw = verify(bundle_dir)
    version = manifest["firmware_version"]
    root = store_dir(data_dir)
    os.makedirs(root, mode=DIR_MODE, exist_ok=True)
    dest = os.path.join(root, version)
    if os.path.exists(dest):
        return version, _same_or_conflict(data_dir, version, manifest)
    _clean_stale(root, time.time())
    tmp = os.path.join(root, ".tmp-%s-%s" % (version, os.urandom(4).hex()))
    os.mkdir(tmp, DIR_MODE)
    try:
        _copy(bundle_dir, tmp, manifest, raw)
        _fsync_dir(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if os.path.exists(dest):  # another publish of this version won the race
                return version, _same_or_conflict(data_dir, version, manifest)
            raise
    finally:
        if os.path.exists(tmp):
            _remove_tree(tmp)
    _fsync_dir(root)
    return version, True


def _same_or_conflict(data_dir, version, manifest):
    have = get(data_dir, version)
    if have is None or _content(have) != _content(manifest):
        raise FirmwareError("firmware %s is already published with other content; a version "
                            "names one bundle for good (build with another --version)"
                            % version, status=409)
    return False


def manifest_bytes(data_dir, version):
    """manifest.json of a stored version as stored; None when the store has no such version."""
    if not valid_version(version):
        return None
    try:
        with open(os.path.join(store_dir(data_dir), version, MANIFEST), "rb") as f:
            return f.read()
    except OSError:
        return None


def get(data_dir, version):
    """The manifest dict of a stored version, or None."""
    raw = manifest_bytes(data_dir, version)
    if raw is None:
        return None
    try:
        return parse_manifest(raw)
    except FirmwareError:
        return None


def file_path(data_dir, version, path, manifest=None):
    """(absolute path, manifest entry) of a file of a stored version; None unless the
    manifest lists exactly that path (nothing else under the store is reachable)."""
    manifest = manifest if manifest is not None else get(data_dir, version)
    if manifest is None or not safe_path(path):
        return None
    for e in entries(manifest):
        if e["path"] == path:
            return os.path.join(store_dir(data_dir), version, *path.split("/")), e
    return None


def versions(data_dir):
    """Summaries of the stored versions, oldest publish first: version, board, kind, files,
    total_size, published (epoch seconds)."""
    root = store_dir(data_dir)
    try:
        names = os.listdir(root)
    except OSError:
        return []
    out = []
    for name in names:
        if name.startswith(".") or not valid_version(name):
            continue
        m = get(data_dir, name)
        if m is None or m.get("firmware_version") != name:
            continue
        try:
            published = os.stat(os.path.join(root, name)).st_mtime
        except OSError:
            continue
        out.append({"version": name, "board": m.get("board"), "kind": m.get("kind"),
                    "files": len(entries(m)),
                    "total_size": sum(e["size"] for e in entries(m)),
                    "published": published})
    out.sort(key=lambda v: (v["published"], v["version"]))
    return out



def _member_name(m):
    name = m.name
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _extract(tf, dest):
    """Extract a tar's regular files and directories into `dest`, refusing anything else."""
    total = 0
    members = tf.getmembers()
    if len(members) > MAX_FILES + 100:
        raise FirmwareError("the archive has too many members (%d)" % len(members))
    for m in members:
        name = _member_name(m)
        if name in ("", "."):
            continue
        if m.issym() or m.islnk():
            raise FirmwareError("archive member %r is a link" % m.name)
        if not (m.isfile() or m.isdir()):
            raise FirmwareError("archive member %r is not a file or directory" % m.name)
        if m.name.startswith("/") or not safe_path(name):
            raise FirmwareError("archive member %r has an absolute path or a '..'" % m.name)
        target = os.path.join(dest, *name.split("/"))
        if m.isdir():
            os.makedirs(target, mode=0o700, exist_ok=True)
            continue
        total += m.size
        if total > MAX_UPLOAD:
            raise FirmwareError("the archive unpacks to more than %d bytes" % MAX_UPLOAD)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        src = tf.extractfile(m)
        try:
            with open(target, "xb") as out:
                shutil.copyfileobj(src, out)
        except FileExistsError:
            raise FirmwareError("archive member %r appears twice" % m.name) from None
        except IsADirectoryError:
            raise FirmwareError("archive member %r is a file and a directory" % m.name) from None


def _bundle_root(top):
    """The directory of the extracted archive that holds manifest.json."""
    if os.path.isfile(os.path.join(top, MANIFEST)):
        return top
    names = os.listdir(top)
    if len(names) == 1 and os.path.isfile(os.path.join(top, names[0], MANIFEST)):
        return os.path.join(top, names[0])
    raise FirmwareError("no %s at the archive's top level or in its one top directory"
                        % MANIFEST)


def publish_tar(data_dir, data):
    """publish() of a bundle sent as a tar archive (bytes); returns (version, created)."""
    root = store_dir(data_dir)
    os.makedirs(root, mode=DIR_MODE, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".upload-", dir=root) as top:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
                _extract(tf, top)
        except (tarfile.TarError, EOFError) as e:
            raise FirmwareError("the body is not a readable tar archive (truncated?): %s"
                                % e) from None
        return publish(data_dir, _bundle_root(top))
