"""A synthetic private corpus for measuring research workflows offline: a fictional
organisation (chosen by a seed) described across Markdown, HTML, PDF, DOCX and text
files, with distractor documents, a stale annual report whose figures the newer one
supersedes, and questions whose gold facts point at the passages that support them.

The PDF is written by a minimal writer here (one Helvetica text object per page, no
dates or IDs), so the same seed gives the same bytes; DOCX needs python-docx.

Example:
    >>> import tempfile
    >>> manifest = write_corpus(tempfile.mkdtemp(), seed=0)
    >>> len(manifest.documents) >= 10, manifest.questions[0].id
    (True, 'q1')
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from concilium._errors import UserError

from ._ingest import document_passages

_ORGS = ["Halvard Instruments", "Corvane Systems", "Meridel Optics", "Tessary Labs"]
_PEOPLE = [
    "Ines Valcourt",
    "Tomas Reyl",
    "Amara Okonde",
    "Lena Fischbach",
    "Piet Ardeni",
    "Yusuf Haldane",
    "Maren Solberg",
    "Dario Quint",
]
_CITIES = ["Tallinn", "Ghent", "Porto", "Lyon", "Aarhus", "Graz", "Bergen", "Turin"]
_PRODUCTS = ["Keelson", "Brightline", "Orrery", "Fathom", "Lodestar", "Quillon"]


@dataclass(frozen=True)
class CorpusQuestion:
    """One question: its gold facts (strings a correct answer contains) and the
    passage IDs (``document#location``) that support them."""

    id: str
    question: str
    gold_facts: list[str]
    supports: list[str]
    documents: list[str]


@dataclass
class CorpusManifest:
    """What :func:`write_corpus` wrote: the seed, the document names and the questions."""

    folder: str
    seed: int
    documents: list[str] = field(default_factory=list[str])
    questions: list[CorpusQuestion] = field(default_factory=list[CorpusQuestion])


def _pdf_escape(text: str) -> str:
    safe = text.encode("latin-1", errors="replace").decode("latin-1")
    return safe.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf_bytes(pages: list[list[str]]) -> bytes:
    """A minimal PDF, one line of text per item, that pypdf reads back; the same
    pages always give the same bytes (no dates, no document ID)."""
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids: list[str] = []
    for lines in pages:
        ops = ["BT", "/F1 11 Tf", "14 TL", "50 800 Td"]
        ops += [f"({_pdf_escape(line)}) Tj T*" for line in lines]
        stream = "\n".join([*ops, "ET"]).encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>" % len(objects)
        )
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>".encode()
    out = bytearray(b"%PDF-1.4\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def docx_bytes(paragraphs: list[str]) -> bytes:
    """A DOCX with one paragraph per item (python-docx)."""
    try:
        import docx
    except ImportError as exc:
        raise UserError(
            "writing DOCX needs python-docx: pip install 'concilium[research]'"
        ) from exc
    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _html(title: str, paragraphs: list[str]) -> str:
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f"<!doctype html>\n<html><head><title>{title}</title>\n"
        "<style>p { margin: 0 }</style><script>var tracking = 1;</script></head>\n"
        f"<body>\n<h1>{title}</h1>\n{body}\n</body></html>\n"
    )


def _documents(rng: random.Random) -> tuple[dict[str, bytes], list[tuple[str, str, list[str]]]]:
    """The files (name -> bytes) and the questions (question, doc, facts)."""
    org = rng.choice(_ORGS)
    ceo, cfo, safety, rival_ceo = rng.sample(_PEOPLE, 4)
    hq, new_site, rival_city = rng.sample(_CITIES, 3)
    flagship, second = rng.sample(_PRODUCTS, 2)
    founded = rng.randint(1968, 1999)
    old_rev, new_rev = rng.randint(30, 60), rng.randint(61, 95)
    old_staff, new_staff = rng.randint(200, 400), rng.randint(401, 700)
    price = rng.randint(12, 48) * 100
    budget = rng.randint(3, 9)
    incidents = rng.randint(2, 9)
    per_diem = rng.randint(45, 80)
    files: dict[str, bytes] = {}
    files["handbook.md"] = (
        f"# {org} staff handbook\n\n{org} was founded in {founded} and is headquartered in {hq}.\n"
        f"Our chief executive is {ceo}; our chief financial officer is {cfo}.\n\n"
        "## Working hours\n\nCore hours are 10:00 to 15:00. Meetings avoid Friday afternoons.\n\n"
        "## Templates\n\nPlaceholders such as {{ user.name }} and {% if x %} in templates are\n"
        "literal text in this handbook; so is __import__('os').system('true').\n"
    ).encode()
    report = "{year} annual report of {org}"
    files["reports/annual_report_2024.pdf"] = pdf_bytes(
        [
            [
                report.format(year=2024, org=org),
                "Published 2025-02-14. Superseded by the 2025 report.",
            ],
            [
                f"Revenue for 2024 was EUR {old_rev} million.",
                f"Headcount at year end: {old_staff} employees.",
            ],
        ]
    )
    files["reports/annual_report_2025.pdf"] = pdf_bytes(
        [
            [
                report.format(year=2025, org=org),
                "Published 2026-02-12. This report is authoritative.",
            ],
            [
                f"Revenue for 2025 was EUR {new_rev} million.",
                f"Headcount at year end: {new_staff} employees.",
            ],
            [f"The {flagship} line made up most of the year's growth."],
        ]
    )
    files["products.html"] = _html(
        f"{org} products",
        [
            f"The {flagship} analyser lists at EUR {price} per unit.",
            f"The {second} probe is sold only with a service contract.",
        ],
    ).encode()
    files["board_minutes_2025-09.docx"] = docx_bytes(
        [
            f"Minutes of the {org} board, 18 September 2025.",
            f"The board approved a new site in {new_site} with a budget of EUR {budget} million.",
            "The next meeting is in December.",
        ]
    )
    files["safety_policy.md"] = (
        f"# Safety policy\n\nThe safety officer is {safety}.\n\n"
        f"In 2025 the company recorded {incidents} reportable incidents, none serious.\n"
    ).encode()
    files["travel_policy.docx"] = docx_bytes(
        [
            "Travel policy.",
            f"The daily allowance (per diem) for travel is EUR {per_diem}.",
            "Book trains for trips under 600 km.",
        ]
    )
    files["it_guide.txt"] = (
        b"IT guide\n\nConnect to the VPN before opening the wiki.\n\nPasswords rotate every 180 days.\n"
    )
    files["distractors/canteen_menu.md"] = (
        "# Canteen menu\n\nMonday: lentil soup. Tuesday: fish stew.\n\n"
        f"The canteen's revenue target is EUR {rng.randint(1, 9)}0 thousand.\n"
    ).encode()
    files["distractors/press_rival.html"] = _html(
        "Industry news",
        [
            f"A rival firm based in {rival_city}, led by {rival_ceo}, reported revenue of EUR "
            f"{rng.randint(96, 140)} million and {rng.randint(701, 900)} employees.",
        ],
    ).encode()
    questions = [
        (f"Who is the chief executive of {org}?", "handbook.md", [ceo]),
        (
            f"What was {org}'s revenue in its latest annual report?",
            "reports/annual_report_2025.pdf",
            [f"EUR {new_rev} million"],
        ),
        (
            f"How many employees did {org} have at the end of 2025?",
            "reports/annual_report_2025.pdf",
            [str(new_staff)],
        ),
        (
            f"Where will {org} open its new site, and with what budget?",
            "board_minutes_2025-09.docx",
            [new_site, f"EUR {budget} million"],
        ),
        (f"What is the list price of the {flagship} analyser?", "products.html", [f"EUR {price}"]),
        (
            "How many reportable incidents were recorded in 2025?",
            "safety_policy.md",
            [f"{incidents} reportable incidents"],
        ),
        ("What is the daily travel allowance?", "travel_policy.docx", [f"EUR {per_diem}"]),
        (f"In what year was {org} founded?", "handbook.md", [str(founded)]),
    ]
    return files, questions


def write_corpus(folder: str | Path, seed: int = 0) -> CorpusManifest:
    """Write the synthetic corpus for ``seed`` into ``folder`` and its ``questions.jsonl``.

    Args:
        folder: where to write (created if missing; files of the same names are replaced).
        seed: picks the organisation, people, places and figures.

    Returns:
        The manifest: document names and questions with their supporting passage IDs.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    files, questions = _documents(random.Random(seed))
    manifest = CorpusManifest(folder=str(root), seed=seed, documents=sorted(files))
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    for number, (question, document, facts) in enumerate(questions, start=1):
        passages = document_passages(document, files[document], lambda _note: None)
        supports = [p.id for p in passages if any(fact in p.text for fact in facts)]
        if not supports:
            raise AssertionError(f"no passage of {document} states {facts}; the generator is wrong")
        manifest.questions.append(
            CorpusQuestion(f"q{number}", question, facts, supports, [document])
        )
    lines = [json.dumps(asdict(q), ensure_ascii=False) for q in manifest.questions]
    (root / "questions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest
