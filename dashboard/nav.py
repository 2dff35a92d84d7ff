"""Which screens exist and which roles see them (DESIGN.md, "Users and what each may do").

The dashboard registers only the pages of the user's role with ``st.navigation``; each page
script checks the role again through ``dashboard.auth.guard`` (a page run any other way refuses),
and every mutating call is checked a third time by the library (``qcbr.roles.require``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"

BUSINESS, DATA_SCIENTIST, MANAGER = "business", "data_scientist", "manager"


@dataclass(frozen=True)
class PageSpec:
    key: str  # the page file's stem and its url path
    title: str
    icon: str
    section: str
    roles: frozenset[str]

    @property
    def path(self) -> Path:
        return PAGES_DIR / f"{self.key}.py"


PAGES: tuple[PageSpec, ...] = (
    PageSpec("overview", "Overview & ROI", ":material/dashboard:", "Overview", frozenset({DATA_SCIENTIST, MANAGER})),
    PageSpec("cases", "Cases", ":material/table_chart:", "Build", frozenset({DATA_SCIENTIST})),
    PageSpec("circuits", "Circuits & similarity", ":material/memory:", "Build", frozenset({DATA_SCIENTIST})),
    PageSpec("training", "Training", ":material/model_training:", "Build", frozenset({DATA_SCIENTIST})),
    PageSpec("registry", "Registry", ":material/inventory_2:", "Operate", frozenset({DATA_SCIENTIST, MANAGER})),
    PageSpec("endpoints", "Endpoints", ":material/lan:", "Operate", frozenset({DATA_SCIENTIST, MANAGER})),
    PageSpec("monitoring", "Monitoring", ":material/monitoring:", "Operate", frozenset({DATA_SCIENTIST, MANAGER})),
    PageSpec("predict", "Predict", ":material/online_prediction:", "Use", frozenset({BUSINESS, DATA_SCIENTIST, MANAGER})),
    PageSpec("my_predictions", "My predictions", ":material/history:", "Use", frozenset({BUSINESS, DATA_SCIENTIST})),
)

BY_KEY = {p.key: p for p in PAGES}

# the page each role lands on
HOME = {BUSINESS: "predict", DATA_SCIENTIST: "overview", MANAGER: "overview"}


def pages_for(role: str) -> list[PageSpec]:
    """The pages a role may open, in menu order (the operator role sees everything)."""
    if role == "operator":
        return list(PAGES)
    return [p for p in PAGES if role in p.roles]


def allowed(role: str, key: str) -> bool:
    return role == "operator" or role in BY_KEY[key].roles
