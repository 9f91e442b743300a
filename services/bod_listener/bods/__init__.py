"""Reading Infor ION BODs (Business Object Documents) that M3 publishes: the ONE place the bridge parses them.

`parse_bod(xml)` turns one BOD into normalized events for the bridge's topics, or raises `BodError` with a reason:

- `malformed`: not well-formed XML, a DTD / entity declaration / external reference (refused outright), too large,
  or not BOD-shaped (no ApplicationArea, DataArea, BODID, verb element or noun);
- `unknown_document`: a verb + noun the bridge does not read (e.g. `SyncShipment`, `ProcessItemMaster`);
- `unsupported_action`: an `actionCode` we do not know, or `Delete` on a noun whose contract has no delete;
- `invalid_content`: a value the contract refuses (too long, not a number, not a date); the message names the field.

Parsing is namespace-agnostic (only local names are matched): real BODs use `http://schema.infor.com/InforOAGIS/2`,
prefixed or as the default namespace. Element paths per noun are documented in `docs/m3-interfaces.md` ("ION BODs");
`simulators/ion/bods.py` builds the same shapes.

- `envelope`: the XML, the verb + noun root, ApplicationArea, BODID, actionCode, and `parse_bod` itself;
- `nouns`: each noun's element paths and reader (`NOUNS`);
- `elements`: local-name element access and the BOD value formats;
- `model`: what a read gives (`ParsedBod`, `NormalizedEvent`) or raises (`BodError`).
"""

from services.bod_listener.bods.envelope import (
    INFOR_OAGIS_NS,
    M3_LOGICAL_ID,
    MAX_BOD_BYTES,
    SUPPORTED_DOCUMENTS,
    VERBS,
    BodId,
    parse_bod,
    parse_bod_id,
)
from services.bod_listener.bods.model import Action, BodError, NormalizedEvent, ParsedBod, Reason
from services.bod_listener.bods.nouns import NOUNS

__all__ = [
    "INFOR_OAGIS_NS",
    "M3_LOGICAL_ID",
    "MAX_BOD_BYTES",
    "NOUNS",
    "SUPPORTED_DOCUMENTS",
    "VERBS",
    "Action",
    "BodError",
    "BodId",
    "NormalizedEvent",
    "ParsedBod",
    "Reason",
    "parse_bod",
    "parse_bod_id",
]
