"""Sample PDFs with real text layers and planted facts: report-like pages, a table page, and pages
stating a number that a question can ask for, so later stages can be tested against known answers.

Deterministic: the same (n_docs, seed) gives the same bytes (reportlab's invariant mode fixes the
dates and document ids it would otherwise embed)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import simpleSplit
from reportlab.pdfgen.canvas import Canvas

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 60.0
BODY_FONT, BODY_SIZE, LEADING = "Helvetica", 10.0, 14.0


@dataclass(frozen=True, slots=True)
class PlantedFact:
    doc_id: str
    page: int  # 1-based
    fact_text: str  # the sentence as it appears, on one line, in the page's text layer
    question: str
    answer: str  # the bare value, e.g. "4812"

    @property
    def answer_format(self) -> str:
        """MMLongBench-Doc's format of the answer: Int, or Float for a decimal."""
        return "Float" if "." in self.answer else "Int"


# fmt: off
_NAMES = (
    "Norland", "Vestra", "Kalmar", "Osterby", "Brightwater", "Lindqvist", "Marrow", "Aldren",
    "Tessaly", "Corvin", "Halden", "Rimefield", "Ostrava", "Pellham", "Quillon", "Sandvik",
)
_TRADES = ("Freight", "Energy", "Textiles", "Analytics", "Shipping", "Foods", "Robotics", "Paper")
_REGIONS = ("the Nordics", "Iberia", "the Baltic states", "Central Europe", "the Benelux")
_SUBJECTS = ("The {dept} division", "Our {dept} team", "Management", "The board", "The {dept} unit")
_DEPTS = ("logistics", "procurement", "sales", "research", "operations", "finance", "service")
_VERBS = (
    "expanded", "reviewed", "streamlined", "renegotiated", "digitised", "consolidated", "audited",
)
_OBJECTS = (
    "its supplier contracts", "the regional network", "customer onboarding", "warehouse planning",
    "the reporting process", "energy purchasing", "fleet maintenance", "the pricing model",
)
_CLOSERS = (
    "with measurable effects on cost and lead times.",
    "in line with the plan presented last year.",
    "while keeping headcount broadly stable.",
    "and the results are discussed in the following sections.",
    "as part of the efficiency programme.",
)
_SECTIONS = (
    "Strategy", "Operations", "Markets", "Risk management", "People", "Sustainability",
    "Governance", "Outlook",
)
# fmt: on


def write_sample_pdfs(
    out_dir: Path, n_docs: int, seed: int, pages: tuple[int, int] = (5, 30)
) -> tuple[list[Path], list[PlantedFact]]:
    """Write `n_docs` PDFs of `pages` (min, max) pages each into `out_dir`; return their paths and
    the facts planted in them (doc_id = file name)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, facts = [], []
    for index in range(n_docs):
        rng = random.Random(f"{seed}:{index}:sample-pdf")
        path, doc_facts = _write_document(out_dir, index, rng, pages)
        paths.append(path)
        facts.extend(doc_facts)
    return paths, facts


def _write_document(
    out_dir: Path, index: int, rng: random.Random, page_range: tuple[int, int]
) -> tuple[Path, list[PlantedFact]]:
    company = f"{rng.choice(_NAMES)} {rng.choice(_TRADES)}"
    year = rng.randint(2015, 2023)
    n_pages = rng.randint(*page_range)
    doc_id = f"{index:03d}_{company.replace(' ', '_').lower()}_{year}.pdf"
    # Page 1 is the title; one table page; one or two fact pages, all distinct.
    body_pages = list(range(2, n_pages + 1))
    table_page = rng.choice(body_pages)
    fact_pages = rng.sample([p for p in body_pages if p != table_page], k=min(2, n_pages - 2))
    templates = rng.sample(_FACT_TEMPLATES, k=len(fact_pages))
    facts = {
        page: template(rng, doc_id, page, company, year)
        for page, template in zip(fact_pages, templates, strict=True)
    }
    path = out_dir / doc_id
    canvas = Canvas(str(path), pagesize=A4, invariant=1)
    canvas.setTitle(f"{company} annual report {year}")
    for page in range(1, n_pages + 1):
        _header(canvas, company, year, page, n_pages)
        if page == 1:
            _title_page(canvas, company, year)
        elif page == table_page:
            _table_page(canvas, rng, company, year)
        else:
            lead = facts[page].fact_text if page in facts else None
            _report_page(canvas, rng, lead)
        canvas.showPage()
    canvas.save()
    return path, [facts[page] for page in sorted(facts)]


def _header(canvas: Canvas, company: str, year: int, page: int, n_pages: int) -> None:
    canvas.setFont("Helvetica", 8)
    canvas.drawString(MARGIN, PAGE_HEIGHT - 35, f"{company} | Annual report {year}")
    canvas.drawRightString(PAGE_WIDTH - MARGIN, 30, f"Page {page} of {n_pages}")


def _title_page(canvas: Canvas, company: str, year: int) -> None:
    canvas.setFont("Helvetica-Bold", 28)
    canvas.drawString(MARGIN, PAGE_HEIGHT / 2 + 40, company)
    canvas.setFont("Helvetica", 16)
    canvas.drawString(MARGIN, PAGE_HEIGHT / 2, f"Annual report {year}")


def _report_page(canvas: Canvas, rng: random.Random, lead: str | None) -> None:
    """A section heading and paragraphs; `lead` (a planted fact) opens the first paragraph, so it
    sits on one line of the text layer."""
    y = PAGE_HEIGHT - 80
    canvas.setFont("Helvetica-Bold", 14)
    canvas.drawString(MARGIN, y, rng.choice(_SECTIONS))
    y -= 28
    for number in range(rng.randint(3, 5)):
        sentences = [_sentence(rng) for _ in range(rng.randint(3, 6))]
        lines = simpleSplit(" ".join(sentences), BODY_FONT, BODY_SIZE, PAGE_WIDTH - 2 * MARGIN)
        if number == 0 and lead is not None:
            lines = [lead, *lines]
        canvas.setFont(BODY_FONT, BODY_SIZE)
        for line in lines:
            canvas.drawString(MARGIN, y, line)
            y -= LEADING
        y -= LEADING


def _sentence(rng: random.Random) -> str:
    subject = rng.choice(_SUBJECTS).format(dept=rng.choice(_DEPTS))
    return f"{subject} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_CLOSERS)}"


def _table_page(canvas: Canvas, rng: random.Random, company: str, year: int) -> None:
    """Key figures for the four years before the report year (never the planted year, so a table
    value can not contradict a planted fact)."""
    years = list(range(year - 4, year))
    rows = [
        ("Revenue (million EUR)", [f"{rng.randint(300, 9000):,}" for _ in years]),
        ("Operating income (million EUR)", [f"{rng.randint(10, 900):,}" for _ in years]),
        ("Employees", [f"{rng.randint(200, 40000):,}" for _ in years]),
        ("CO2 emissions (kt)", [f"{rng.uniform(1, 500):.1f}" for _ in years]),
    ]
    y = PAGE_HEIGHT - 80
    canvas.setFont("Helvetica-Bold", 14)
    canvas.drawString(MARGIN, y, f"Key figures of {company}")
    y -= 36
    columns = [MARGIN, MARGIN + 200, MARGIN + 270, MARGIN + 340, MARGIN + 410]
    canvas.setFont("Helvetica-Bold", BODY_SIZE)
    for x, label in zip(columns, ["Indicator", *map(str, years)], strict=True):
        canvas.drawString(x, y, label)
    canvas.line(MARGIN, y - 5, PAGE_WIDTH - MARGIN, y - 5)
    canvas.setFont(BODY_FONT, BODY_SIZE)
    for label, values in rows:
        y -= 20
        for x, cell in zip(columns, [label, *values], strict=True):
            canvas.drawString(x, y, cell)


def _revenue(rng: random.Random, doc_id: str, page: int, company: str, year: int) -> PlantedFact:
    value = rng.randint(300, 9999)
    return PlantedFact(
        doc_id,
        page,
        f"The {year} revenue of {company} was {value:,} million euros.",
        f"What was the {year} revenue of {company}, in million euros?",
        str(value),
    )


def _employees(rng: random.Random, doc_id: str, page: int, company: str, year: int) -> PlantedFact:
    value = rng.randint(120, 48000)
    return PlantedFact(
        doc_id,
        page,
        f"At the end of {year}, {company} employed {value:,} people.",
        f"How many people did {company} employ at the end of {year}?",
        str(value),
    )


def _centres(rng: random.Random, doc_id: str, page: int, company: str, year: int) -> PlantedFact:
    value, region = rng.randint(3, 90), rng.choice(_REGIONS)
    return PlantedFact(
        doc_id,
        page,
        f"In {year}, {company} operated {value} distribution centres in {region}.",
        f"How many distribution centres did {company} operate in {region} in {year}?",
        str(value),
    )


def _renewables(rng: random.Random, doc_id: str, page: int, company: str, year: int) -> PlantedFact:
    value = rng.randint(100, 990) / 10
    return PlantedFact(
        doc_id,
        page,
        f"In {year}, {value:.1f}% of the electricity used by {company} came from renewables.",
        f"What percentage of the electricity used by {company} came from renewables in {year}?",
        f"{value:.1f}",
    )


_FACT_TEMPLATES = (_revenue, _employees, _centres, _renewables)
