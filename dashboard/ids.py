"""Every component id in one place, prefixed by page, so no two pages can collide."""

REFRESH = "shell-refresh"
LAST_UPDATE = "shell-last-update"

OVERVIEW_MAP = "overview-map"
OVERVIEW_CARDS = "overview-cards"
OVERVIEW_TABLE = "overview-table"
OVERVIEW_FAMILY = "overview-family"
