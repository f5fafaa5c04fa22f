"""The detectors' state layout: column numbers of each per-stream array, and shared units.

State (all float64, C-contiguous, row ``r`` is one stream):

- ``core[r, C_*]``: counters, the fast level and spread, CUSUMs, run lengths, rates;
- ``slots[r, 48, 3]``: the seasonal profile, 24 hours x (weekday, weekend), each slot holding
  level, spread (mean absolute deviation) and count;
- ``hours[r, 24, 2]``: a ring of hourly sums and counts for the air-quality averaging periods;
- ``conds[r, K, D_*]``: one alert condition per kind, with hysteresis and a flapping counter;
- ``params[r, P_*]``: what the stream is (plausible range, metric code, partner, neighbours).

Thresholds arrive as ``cfg`` (see :class:`processing.config.DetectionSettings`), indexed by the
``S_*`` constants below, which follow that class's field order. The fields the main detector
reads on every reading come first, so they share the row's first cache lines.
"""

from __future__ import annotations

# core fields: the main detector's, read on every reading
C_N = 0  # finite readings learned
C_LAST_TS = 1  # µs
C_LAST_X = 2
C_CADENCE = 3  # seconds between readings (learned)
C_LEVEL = 4
C_SPREAD = 5
C_EXPECTED = 6
C_SIGMA = 7
C_FIRST_TS = 8  # µs of the first reading learned
C_SETTLED = 9  # 1 once warm-up has ended and the hour means became offsets
C_PAIR_START = 10  # UTC µs from which the remembered pair of seasonal slots holds (0: none)
C_PAIR_END = 11  # UTC µs until which it holds (an hour, or the next change of the clocks)
C_PAIR = 12  # the pair, earlier slot x N_SLOTS + later slot
C_SPIKE_Q = 13  # of |z|
C_SPIKE_M = 14
C_LAST_Z = 15
# the stage's: runs, level shifts, scores, bins, air quality, congestion
C_RUN = 16  # identical consecutive readings so far
C_RUN_START = 17  # µs
C_REPEAT_P = 18  # how often this stream repeats a value when healthy
C_BOTTOM = 19  # the lowest value of about the last season (a detection limit, a quiet night)
C_RUN_BOTTOM = 20  # 1 while the current run sits at that bottom
C_CUSUM_POS = 21
C_CUSUM_NEG = 22
C_SHIFT_Q = 23  # of the larger CUSUM
C_SHIFT_M = 24
C_SCORE = 25
C_SMOOTH = 26  # unprotected 10-minute average, what neighbours compare
C_FILL_RATE = 27  # %/h
C_TTF_H = 28
C_HOUR = 29  # hour number of the newest air-quality ring slot
C_AQ_MEAN = 30
C_AQ_BAND = 31
C_CONG_Z = 32  # speed z averaged over about five minutes
# the neighbour sweep's
C_NB_OFFSET = 33  # usual offset from the neighbours' median
C_NB_SPREAD = 34
C_NB_N = 35
C_NB_SCORE = 36  # the latest comparison's score
C_NB_TS = 37  # µs of the last comparison with warm neighbours
C_NB_SEEN = 38  # µs of the newest reading already compared with the neighbours
C_NB_Q = 39  # of |z| against the neighbours
C_NB_M = 40
C_NB_CUSUM_POS = 41  # CUSUMs of the z against the neighbours: an offset or drift of one station
C_NB_CUSUM_NEG = 42
C_NB_SHIFT_Q = 43  # tail model of the larger of them
C_NB_SHIFT_M = 44
# the main detector's, read when sigma is
C_QUANTUM = 45  # the smallest change between two readings seen (0: none yet)
# the spike's: how the distance from the expectation changes from one reading to the next
C_LAST_RES = 46  # the last reading less its expectation
C_STEP_SPREAD = 47  # mean absolute change of that, reading to reading
C_JUMP_Q = 48  # of the sudden departure (see processing.fused)
C_JUMP_M = 49
# the neighbour sweep's slow comparison: a drift too slow for the usual offset to notice
C_NB_LONG = 50  # the usual offset over weeks, against which the recent offset drifts
C_NB_DRIFT_SPREAD = 51  # mean absolute distance of the recent offset from the long one
C_NB_DRIFT_Q = 52  # tail model of that distance in its spreads
C_NB_DRIFT_M = 53
C_NB_SPAN = 54  # seconds of readings compared with the neighbours so far
C_NB_HELD = 55  # 1 from a split of the group until this member's comparison is calm again
C_NB_RECENT = 56  # the offset over about a day, learned from every comparison
N_CORE = 57

# params fields
P_LO = 0
P_HI = 1
P_METRIC = 2
P_PARTNER = 3  # row of the paired stream (speed <-> occupancy), -1 if none
P_LEAD = 4  # 1 for the stream that speaks for its sensor (missing data)
P_GROUP = 5  # neighbour group, -1 if none
P_AQ_HOURS = 6
P_AQ_TABLE = 7  # row of the band table, -1 if none
P_ALERT_BAND = 8
P_FLOOR = 9  # smallest meaningful change (instrument resolution)
N_PARAMS = 10

# metric codes
M_GENERIC = 0
M_PARTICLES = 1
M_GAS = 2
M_SPEED = 3
M_OCCUPANCY = 4
M_FILL = 5
M_BIN_TEMPERATURE = 6
M_COUNT = 7

# condition fields
D_ACTIVE = 0
D_SINCE = 1  # µs the anomaly began, 0 if calm
D_CALM = 2  # µs calm began while active, 0 if not calm
D_FLAP = 3  # decaying count of recent openings
D_PEAK = 4
D_OPENED = 5  # µs of the last opening
N_COND = 6

# kinds (processing.kinds.Kind)
K_SPIKE = 0
K_LEVEL = 1
K_STUCK = 2
K_IMPOSSIBLE = 3
K_MISSING = 4
K_AIR = 5
K_CONGESTION = 6
K_OVERFLOW = 7
K_FIRE = 8
K_NEIGHBOUR = 9
N_KINDS = 10

# cfg fields (DetectionSettings order)
S_WARMUP = 0
S_LEVEL_TAU = 1
S_LEVEL_READINGS = 2
S_SLOT_TAU = 3
S_SLOT_WARM = 4
S_ALERT_SCORE = 5
S_CALM_SCORE = 6
S_SUSTAIN_Z = 7
S_PROTECT = 8
S_CUSUM_K = 9
S_CUSUM_CAP = 10
S_CUSUM_CLIP = 11
S_STUCK_RUN = 12
S_STUCK_S = 13
S_STUCK_RATE = 14
S_CONG_SPEED = 15
S_CONG_OCC = 16
S_FILL_WARN = 17
S_FILL_SOON_H = 18
S_FILL_SOON_FROM = 19
S_FIRE_C = 20
S_FIRE_Z = 21
S_FLAP_TAU = 22
S_MISSING_FACTOR = 23
S_MISSING_MIN = 24
S_NB_TAU = 25
S_NB_MIN = 26
S_UTC_OFFSET = 27
S_WARMUP_S = 28
S_CONG_MEAN_Z = 29
S_TAIL_RATE = 30
S_QUIET_READINGS = 31
S_ALERT_EVERY = 32
S_NB_SPLIT = 33
S_NB_DRIFT_TAU = 34

# event columns
E_ROW = 0
E_KIND = 1
E_OPEN = 2  # 1 opened, 0 resolved
E_TS = 3
E_SCORE = 4
E_VALUE = 5
E_EXPECTED = 6
E_SIGMA = 7
N_EVENT = 8

N_SLOTS = 48
US = 1_000_000.0
HOUR_US = 3_600_000_000
WARM_UP_GUARD_FROM = 5  # readings before a warm-up reading can be judged absurd
SMOOTH_S = 600.0  # window of the unprotected average (C_SMOOTH), seconds
BOTTOM_TAU_S = 90 * 86_400.0  # how fast the remembered bottom rises again (a season)
NB_FRESH_S = 600.0  # a neighbour comparison this recent (or two readings old) speaks for it
MAD_TO_SIGMA = 1.2533  # mean absolute deviation of a normal distribution -> its sigma
