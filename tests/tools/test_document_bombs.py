"""Hostile documents: a PDF whose one stream inflates to 1 GiB, a DOCX whose
document.xml unpacks to 256 MiB, and links that loop. Each is skipped with a note
naming the file and the limit, and no process reading them grows past 1 GB (each
read runs in a subprocess whose peak memory, and that of its children, is measured)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from concilium.cli import main
from concilium.tools._corpus import docx_bytes, pdf_bytes
from concilium.tools._ingest import ingest_folder

GB = 1_000_000_000
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_CHUNK = b"BT /F1 11 Tf 50 800 Td " + b"(aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa) Tj " * 29_000 + b"ET\n"

# read one document in a fresh process (a 3 GB cap keeps a failing old reader from
# taking the machine) and report its notes and the peak memory of it and its children
_READ = """
import json, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
from concilium.tools._ingest import document_passages
notes = []
path = Path(sys.argv[1])
try:
    passages = len(document_passages(path.name, path.read_bytes(), notes.append))
except BaseException as exc:
    passages, notes = -1, [f"raised {type(exc).__name__}: {exc}"]
# this process's own high-water mark (VmHWM: ru_maxrss of RUSAGE_SELF starts at the
# RSS of the process that forked it, pytest's) and the largest of its children
own = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
peak = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024
print(json.dumps({"passages": passages, "notes": notes, "peak": peak}))
"""


def _read_in_subprocess(path: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _READ, str(path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _flate_bomb(mib: int) -> bytes:
    """A zlib stream of ``mib`` MiB of text operators, built from one compressed MiB
    repeated (each piece ends with a full flush, so it does not refer back)."""
    chunk = (_CHUNK * 2)[: 2**20]
    deflate = zlib.compressobj(9)
    first = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(mib):
        adler = zlib.adler32(chunk, adler)
    # an empty final block, then the checksum of all the uncompressed bytes
    return first + again * (mib - 1) + b"\x03\x00" + adler.to_bytes(4, "big")


def _pdf_bomb(mib: int) -> bytes:
    stream = _flate_bomb(mib)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 3 0 R >> >> >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _docx_bomb(mib: int) -> bytes:
    """A real DOCX whose word/document.xml holds ``mib`` MiB of paragraphs."""
    source = zipfile.ZipFile(io.BytesIO(docx_bytes(["x"])))
    paragraph = b"<w:p><w:r><w:t>" + b"a" * 4000 + b"</w:t></w:r></w:p>"
    block = paragraph * (2**20 // len(paragraph))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as bomb:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename != "word/document.xml":
                bomb.writestr(entry, data)
                continue
            head, tail = data.split(b"<w:body>")
            with bomb.open(entry.filename, "w", force_zip64=True) as document:
                document.write(head + b"<w:body>")
                for _ in range(mib):
                    document.write(block)
                document.write(tail)
    return out.getvalue()


def test_a_pdf_flate_bomb_is_skipped_with_a_note_and_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pdf"
    path.write_bytes(_pdf_bomb(1024))
    assert path.stat().st_size < 5_000_000  # a few MB that inflate to 1 GiB
    result = _read_in_subprocess(path)
    assert result["passages"] == 0
    assert result["notes"] == [
        "bomb.pdf: skipped, reading it needs more than 768 MiB of memory (a compressed bomb?)"
    ]
    assert isinstance(result["peak"], int) and result["peak"] < GB


def test_a_docx_zip_bomb_is_skipped_with_a_note_and_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    path.write_bytes(_docx_bomb(256))
    assert path.stat().st_size < 5_000_000
    result = _read_in_subprocess(path)
    assert result["passages"] == 0
    [note] = result["notes"]  # type: ignore[misc]
    assert note.startswith("bomb.docx: skipped, it unpacks to more than 67,108,864 bytes")
    assert "word/document.xml" in note
    assert isinstance(result["peak"], int) and result["peak"] < GB


def test_ordinary_pdf_and_docx_are_still_read(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(pdf_bytes([["Revenue was EUR 5 million."], ["Page two."]]))
    (tmp_path / "b.docx").write_bytes(docx_bytes(["First.", "The per diem is EUR 60."]))
    report = ingest_folder(tmp_path)
    assert [(p.id, p.text) for p in report.passages] == [
        ("a.pdf#p1", "Revenue was EUR 5 million."),
        ("a.pdf#p2", "Page two."),
        ("b.docx#P1", "First."),
        ("b.docx#P2", "The per diem is EUR 60."),
    ]
    assert report.notes == []


def test_links_that_loop_are_skipped_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("Staff get 25 days.\n")
    (tmp_path / "self.md").symlink_to("self.md")
    (tmp_path / "one.md").symlink_to("two.md")
    (tmp_path / "two.md").symlink_to("one.md")
    report = ingest_folder(tmp_path)
    assert [p.id for p in report.passages] == ["a.md#L1"]
    assert report.notes == [
        f"{name}: skipped, a link that loops back to itself"
        for name in ("one.md", "self.md", "two.md")
    ]


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example research corpus and workflow, copied."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the index goes under ~/.cache
    shutil.copytree(EXAMPLES / "research_corpus", tmp_path / "research_corpus")
    shutil.copy(EXAMPLES / "research_assistant.yaml", tmp_path)
    return tmp_path


@pytest.fixture
def looped_corpus(corpus: Path) -> Path:
    """The copied corpus with a file linking to itself."""
    (corpus / "research_corpus" / "self.md").symlink_to("self.md")
    return corpus


@pytest.mark.parametrize("command", ["validate", "research"])
def test_validate_and_research_skip_a_self_link_with_a_warning(
    looped_corpus: Path, command: str, caplog: pytest.LogCaptureFixture
) -> None:
    workflow = str(looped_corpus / "research_assistant.yaml")
    args = (
        [command, workflow]
        if command == "validate"
        else [command, str(looped_corpus / "research_corpus"), "Tessary Labs?",
              "--workflow", workflow, "--backend", "sim"]
    )  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    warned = [r.getMessage() for r in caplog.records if r.name == "concilium.tools"]
    assert [w for w in warned if "self.md" in w] == [
        f"document folder {looped_corpus / 'research_corpus'}: "
        "self.md: skipped, a link that loops back to itself"
    ]


def test_research_on_a_folder_with_bombs_answers_within_1_gb(corpus: Path) -> None:
    """The drill's case end to end: ``concilium research`` on a folder holding a PDF
    bomb and a DOCX bomb answers from the other documents, warns about both, and no
    process (the command and its readers) exceeds 1 GB."""
    folder = corpus / "research_corpus"
    (folder / "bomb.pdf").write_bytes(_pdf_bomb(1024))
    (folder / "bomb.docx").write_bytes(_docx_bomb(256))
    run = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))\n"
        "from concilium.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "finally:\n"
        "    own = next(int(line.split()[1]) for line in open('/proc/self/status')\n"
        "               if line.startswith('VmHWM'))  # not RUSAGE_SELF: see _READ\n"
        "    peak = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024\n"
        "    print('peak', peak, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", run, "research", str(folder), "Tessary Labs?", "--workflow",
         str(corpus / "research_assistant.yaml"), "--backend", "sim"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "## Sources" in done.stdout
    assert "bomb.pdf: skipped, reading it needs more than 768 MiB of memory" in done.stderr
    assert "bomb.docx: skipped, it unpacks to more than 67,108,864 bytes" in done.stderr
    peak = int(done.stderr.rsplit("peak ", 1)[1])
    assert peak < GB
