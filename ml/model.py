"""Fraud scorer: a fitted model, its 0-100 calibration and analyst-readable reasons (pure pandas).

Input: a pandas frame with ``ml.features.FEATURE_COLUMNS`` plus ``currency``
(and, for the wording of reasons only, ``ip_country``, ``shipping_country``).
A scorer remembers the columns it was fitted on (``FraudScorer.input_columns``)
and is given those: a model trained before a feature was added keeps scoring.
Output of ``FraudScorer.score``: one row per input row with ``fraud_score``
(float, 0-100, higher = more suspicious) and ``fraud_reasons`` (list of
strings, empty when nothing stands out). The alert decision
(``score >= fraud.alert_threshold``) stays with the caller.

The same class wraps the Isolation Forest champion and the supervised
challenger; ``FraudPyfunc`` makes it an MLflow pyfunc model.

Score mapping (see docs/fraud.md): ``raw`` is the model's anomaly score
(Isolation Forest: ``-score_samples``; challenger: the fraud probability),
higher = more suspicious. On the training rows, the quantile level ``q`` of
``raw`` is mapped piecewise linearly: ``[0, 1 - alert_rate] -> [0, T]`` and
``[1 - alert_rate, 1] -> [T, 100]`` with ``T`` the alert threshold (80). So a
score is "the order is more suspicious than this share of the training
orders", stretched so that about ``alert_rate`` of the training orders reach
the threshold. The mapping is monotone, bounded to [0, 100] (below the
training minimum 0, above the maximum 100), and stable across retrains:
whatever the raw scale of a new forest, the alert share stays ``alert_rate``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from ml.features import FEATURE_COLUMNS
from ml.forest import CompiledForest

CONTEXT_COLUMNS = ("currency", "ip_country", "shipping_country")
INPUT_COLUMNS = (*FEATURE_COLUMNS, *CONTEXT_COLUMNS)
# The input columns of models fitted before the velocity features, written out: a released list never changes.
# Scorers pickled then have no ``input_columns`` of their own and take this one.
FIRST_INPUT_COLUMNS = (
    "amount_value", "hour_of_day", "day_of_week", "prior_tx_count", "prior_avg_amount", "amount_to_avg_ratio",
    "amount_zscore", "seconds_since_last_order", "is_new_device", "is_new_ip_country", "is_country_mismatch",
    "currency", "ip_country", "shipping_country",
)  # fmt: skip
OUTPUT_COLUMNS = ("fraud_score", "fraud_reasons")

# Model inputs derived from the silver feature columns (FraudFeatures.transform).
DERIVED_FEATURES = (
    "log_amount_rel",  # log(amount / the training median amount in the order's currency)
    "log_amount_ratio",  # log(amount / customer's prior average); 0 for a first order
    "log_amount_above_avg",  # the same, 0 at or below the average: only the side fraud is on
    "log_prior_tx_count",  # log(1 + orders before this one)
    "log10_seconds_since_last",  # log10 of the gap to the previous order; 7 (~4 months) for a first order
    "is_new_device_known_customer",  # a device the customer never used, for a customer with history
    "is_new_ip_country_known_customer",
    "is_country_mismatch",
    "hour_sin",  # hour of day on the circle, so 23:00 and 00:00 are neighbours
    "hour_cos",
    "day_of_week_sin",
    "day_of_week_cos",
    "log_customer_orders_10m",  # log(1 + the customer's orders in the 10 minutes before)
    "log_customer_orders_1h",
    "log_device_orders_10m",  # log(1 + orders from the device in the 10 minutes before); 0 without a device
    "log_device_orders_1h",
    "device_payment_methods_1h",  # payment methods from the device in the hour, this order's included; 1 without
)
# The default model's inputs, a feature listed n times weighing n times (FraudFeatures.transform). An Isolation
# Forest isolates an order that is extreme on many inputs (a takeover: new device, new country, high amount)
# sooner than one extreme on the amount alone (an amount spike from home), so the amount inputs weigh more;
# only the ratio's upper side is an input (a small order is not suspicious, and its long lower tail took the
# splits); the country mismatch weighs twice. Day of week carries no signal in the simulated shop, and the hour
# counts and payment methods let ordinary repeat orders crowd out takeovers at the top of the scores (docs/fraud.md,
# "Weights" and the velocity ablation), so they are left out; conf `fraud.model_features` chooses others.
DEFAULT_MODEL_FEATURES = (
    *("log_amount_rel",) * 5,
    *("log_amount_above_avg",) * 2,
    "log_prior_tx_count",
    "log10_seconds_since_last",
    "is_new_device_known_customer",
    "is_new_ip_country_known_customer",
    *("is_country_mismatch",) * 2,
    "hour_sin",
    "hour_cos",
    "log_customer_orders_10m",
    "log_device_orders_10m",
)
NO_PREVIOUS_ORDER_LOG10_S = 7.0
RECENT_BURST = "recent_orders_10m"  # a reason: at least BURST_ORDERS earlier orders of the customer or device
BURST_ORDERS = 2  # in the 10 minutes before


def _float(pdf: pd.DataFrame, column: str) -> pd.Series:
    if column not in pdf:
        return pd.Series(np.nan, index=pdf.index, dtype="float64")
    return pd.to_numeric(pdf[column], errors="coerce").astype("float64")


def _flag(pdf: pd.DataFrame, column: str) -> pd.Series:
    if column not in pdf:
        return pd.Series(False, index=pdf.index)
    return pdf[column].astype("boolean").fillna(False).astype(bool)


class FraudFeatures(BaseEstimator, TransformerMixin):
    """Silver feature columns -> numeric model inputs (nulls filled, logs, cyclic hour). Learns currency medians."""

    def __init__(self, features: tuple[str, ...] = DEFAULT_MODEL_FEATURES):
        self.features = features

    def fit(self, X: pd.DataFrame, y=None) -> FraudFeatures:
        unknown = set(self.features) - set(DERIVED_FEATURES)
        if unknown:
            raise ValueError(f"unknown model features {sorted(unknown)}; known: {', '.join(DERIVED_FEATURES)}")
        amount = _float(X, "amount_value")
        currency = X["currency"] if "currency" in X else pd.Series("", index=X.index)
        positive = amount > 0
        self.currency_median_ = amount[positive].groupby(currency[positive]).median().to_dict()
        self.global_median_ = float(amount[positive].median()) if positive.any() else 1.0
        return self

    def derive(self, X: pd.DataFrame) -> pd.DataFrame:
        """All ``DERIVED_FEATURES`` for ``X`` (used by the model and by the reasons)."""
        amount = _float(X, "amount_value")
        if "currency" in X:
            median = X["currency"].map(self.currency_median_).astype("float64").fillna(self.global_median_)
        else:
            median = pd.Series(self.global_median_, index=X.index)
        prior = _float(X, "prior_tx_count").fillna(0.0)
        known = prior > 0
        ratio = _float(X, "amount_to_avg_ratio").where(known)
        gap = _float(X, "seconds_since_last_order")
        hour = _float(X, "hour_of_day").fillna(12.0)
        dow = _float(X, "day_of_week").fillna(3.0)
        out = pd.DataFrame(index=X.index)
        out["log_amount_rel"] = np.log(amount.clip(lower=0.01) / median).fillna(0.0)
        out["log_amount_ratio"] = np.log(ratio.clip(lower=1e-3)).fillna(0.0)
        out["log_amount_above_avg"] = out["log_amount_ratio"].clip(lower=0.0)
        out["log_prior_tx_count"] = np.log1p(prior)
        out["log10_seconds_since_last"] = np.log10(gap.clip(lower=1.0)).fillna(NO_PREVIOUS_ORDER_LOG10_S)
        out["is_new_device_known_customer"] = (_flag(X, "is_new_device") & known).astype("float64")
        out["is_new_ip_country_known_customer"] = (_flag(X, "is_new_ip_country") & known).astype("float64")
        out["is_country_mismatch"] = _flag(X, "is_country_mismatch").astype("float64")
        out["hour_sin"] = np.sin(2 * np.pi * hour / 24)
        out["hour_cos"] = np.cos(2 * np.pi * hour / 24)
        out["day_of_week_sin"] = np.sin(2 * np.pi * dow / 7)
        out["day_of_week_cos"] = np.cos(2 * np.pi * dow / 7)
        for name in ("customer_orders_10m", "customer_orders_1h", "device_orders_10m", "device_orders_1h"):
            out[f"log_{name}"] = np.log1p(_float(X, name).clip(lower=0.0)).fillna(0.0)
        out["device_payment_methods_1h"] = _float(X, "device_payment_methods_1h").clip(lower=1.0).fillna(1.0)
        return out

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """The model's inputs: ``features`` in order. A feature listed n times is n columns (``name``,
        ``name#2``, ...): an Isolation Forest picks split features uniformly, so it weighs n times."""
        derived = self.derive(X)
        columns = {name if k == 1 else f"{name}#{k}": derived[name] for name, k in _numbered(self.features)}
        return pd.DataFrame(columns, index=derived.index)


def _numbered(names: tuple[str, ...]) -> list[tuple[str, int]]:
    """Each name with its occurrence number (1 for the first)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append((name, seen[name]))
    return out


@dataclass(frozen=True)
class ScoreCalibration:
    """Monotone map raw model score -> 0-100: training quantile q, with q = 1 - alert_rate landing on the threshold."""

    raw_points: np.ndarray  # increasing raw scores (training quantiles)
    score_points: np.ndarray  # increasing scores in [0, 100] at those raw scores
    alert_rate: float
    threshold: float

    @classmethod
    def fit(cls, raw: np.ndarray, alert_rate: float, threshold: float, points: int = 400) -> ScoreCalibration:
        """Calibrate on the training rows' raw scores."""
        if not 0 < alert_rate < 1 or not 0 < threshold < 100:
            raise ValueError("alert_rate must be in (0, 1) and threshold in (0, 100)")
        cut = 1.0 - alert_rate
        levels = np.unique(np.concatenate([np.linspace(0, cut, points), np.linspace(cut, 1, points)]))
        values = np.quantile(np.asarray(raw, dtype="float64"), levels)
        scores = np.where(
            levels <= cut, threshold * levels / cut, threshold + (100 - threshold) * (levels - cut) / alert_rate
        )
        # Ties in the raw quantiles: keep the highest score of each raw value, so the map stays a function.
        keep = np.r_[values[1:] > values[:-1], True]
        return cls(values[keep], np.clip(scores[keep], 0.0, 100.0), alert_rate, threshold)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(raw, dtype="float64"), self.raw_points, self.score_points, left=0.0, right=100.0)


@dataclass(frozen=True)
class ReasonReference:
    """Training distribution of the derived features, to say how unusual a value is (share of orders as extreme)."""

    quantiles: dict[str, np.ndarray]  # feature -> 201 training quantiles
    rates: dict[str, float]  # binary feature -> training share of 1
    hour_share: dict[int, float]  # hour of day -> training share
    max_share: float  # a value rarer than this share of training orders is a reason

    LEVELS = np.linspace(0, 1, 201)

    @classmethod
    def fit(cls, derived: pd.DataFrame, hours: pd.Series, max_share: float) -> ReasonReference:
        continuous = ("log_amount_rel", "log_amount_ratio", "log10_seconds_since_last")
        known = derived["log_prior_tx_count"] > 0
        quantiles = {}
        for name in continuous:
            values = derived.loc[known, name] if name != "log_amount_rel" else derived[name]
            quantiles[name] = np.quantile(values, cls.LEVELS) if len(values) else np.zeros(len(cls.LEVELS))
        binary = ("is_new_device_known_customer", "is_new_ip_country_known_customer", "is_country_mismatch")
        rates = {name: float(derived[name].mean()) for name in binary}
        rates[RECENT_BURST] = float(recent_burst(derived).mean())
        share = hours.dropna().astype(int).value_counts(normalize=True)
        return cls(quantiles, rates, {int(h): float(s) for h, s in share.items()}, max_share)

    def upper_share(self, name: str, values: np.ndarray) -> np.ndarray:
        """Share of training orders at or above each value."""
        return 1.0 - np.interp(values, self.quantiles[name], self.LEVELS, left=0.0, right=1.0)

    def lower_share(self, name: str, values: np.ndarray) -> np.ndarray:
        """Share of training orders at or below each value."""
        return np.interp(values, self.quantiles[name], self.LEVELS, left=0.0, right=1.0)


def _money(value: float, currency: str | None) -> str:
    return f"{value:,.2f} {currency}" if currency else f"{value:,.2f}"


def _times(x: float) -> str:
    return f"{x:.0f}x" if x >= 10 else f"{x:.1f}x" if x >= 1 else f"{x:.2f}x"


def _orders(n: float) -> str:
    return "1 order" if int(n) == 1 else f"{int(n)} orders"


def recent_burst(derived: pd.DataFrame) -> pd.Series:
    """Orders with at least ``BURST_ORDERS`` earlier orders of their customer or device in the 10 minutes before."""
    recent = np.maximum(derived["log_customer_orders_10m"], derived["log_device_orders_10m"])
    return recent >= np.log1p(BURST_ORDERS) - 1e-9


def _burst_reason(by_customer, by_device) -> str:
    customer = 0 if by_customer is None or pd.isna(by_customer) else int(by_customer)
    device = 0 if by_device is None or pd.isna(by_device) else int(by_device)
    if device > customer:
        return f"{_orders(device)} from this device in the 10 minutes before"
    return f"{_orders(customer)} by this customer in the 10 minutes before"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.0f} hours"


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # fitted forest -> its CompiledForest


def compiled(forest) -> CompiledForest:
    """The forest's ``CompiledForest`` (made once per fitted forest in this process; not pickled with it)."""
    found = _COMPILED.get(forest)
    if found is None:
        found = _COMPILED[forest] = CompiledForest(forest)
    return found


@dataclass
class FraudScorer:
    """A fitted model + calibration + reasons. ``score(pdf)`` -> fraud_score (0-100) and fraud_reasons."""

    pipeline: Pipeline  # FraudFeatures -> IsolationForest or a classifier
    kind: str  # "isolation_forest" or "gradient_boosting"
    calibration: ScoreCalibration
    reference: ReasonReference
    reasons_min_score: float = 50.0  # reasons are worded only for orders at or above this score
    max_reasons: int = 3
    metadata: dict = field(default_factory=dict)
    # The columns the model was fitted on, set by ``fit_calibrated``; a scorer pickled before this field existed
    # reads the class default.
    input_columns: tuple[str, ...] = FIRST_INPUT_COLUMNS

    @property
    def features(self) -> FraudFeatures:
        return self.pipeline.named_steps["features"]

    def raw_scores(self, pdf: pd.DataFrame) -> np.ndarray:
        """The model's own score, higher = more suspicious."""
        if self.kind == "isolation_forest":
            *steps, (_, forest) = self.pipeline.steps
            features = pdf
            for _, step in steps:
                features = step.transform(features)
            return -compiled(forest).score_samples(features)
        return self.pipeline.predict_proba(pdf)[:, 1]

    def score(self, pdf: pd.DataFrame) -> pd.DataFrame:
        """``fraud_score`` (float 0-100) and ``fraud_reasons`` (list[str]) for each row, same index.

        Only ``input_columns`` are read: columns added to silver after the model was fitted are left out."""
        out = pd.DataFrame(index=pdf.index)
        pdf = pdf[[c for c in self.input_columns if c in pdf.columns]]
        if pdf.empty:
            out["fraud_score"] = pd.Series(dtype="float64")
            out["fraud_reasons"] = pd.Series(dtype="object")
            return out
        scores = self.calibration(self.raw_scores(pdf))
        out["fraud_score"] = np.round(scores, 2)
        out["fraud_reasons"] = self.reasons(pdf, scores)
        return out

    def reasons(self, pdf: pd.DataFrame, scores: np.ndarray) -> list[list[str]]:
        """Up to ``max_reasons`` phrases per row, rarest signal first; empty below ``reasons_min_score``."""
        result: list[list[str]] = [[] for _ in range(len(pdf))]
        rows = np.flatnonzero(scores >= self.reasons_min_score)
        if len(rows) == 0:
            return result
        sub = pdf.iloc[rows]
        d = self.features.derive(sub)
        ref = self.reference
        known = d["log_prior_tx_count"].to_numpy() > 0
        ratio_hi = np.where(known, ref.upper_share("log_amount_ratio", d["log_amount_ratio"].to_numpy()), 1.0)
        ratio_lo = np.where(known, ref.lower_share("log_amount_ratio", d["log_amount_ratio"].to_numpy()), 1.0)
        amount_hi = ref.upper_share("log_amount_rel", d["log_amount_rel"].to_numpy())
        gap_lo = np.where(
            known, ref.lower_share("log10_seconds_since_last", d["log10_seconds_since_last"].to_numpy()), 1.0
        )
        new_device = d["is_new_device_known_customer"].to_numpy() > 0
        new_country = d["is_new_ip_country_known_customer"].to_numpy() > 0
        mismatch = d["is_country_mismatch"].to_numpy() > 0
        burst = recent_burst(d).to_numpy()
        burst_rate = ref.rates.get(RECENT_BURST)  # None: a reference fitted before the velocity features

        def col(name: str) -> list:
            return sub[name].tolist() if name in sub else [None] * len(sub)

        amount, avg, prior = col("amount_value"), col("prior_avg_amount"), col("prior_tx_count")
        gap, hour = col("seconds_since_last_order"), col("hour_of_day")
        by_customer, by_device = col("customer_orders_10m"), col("device_orders_10m")
        currency, ip, ship = col("currency"), col("ip_country"), col("shipping_country")
        limit = ref.max_share
        for i, row in enumerate(rows):
            found: list[tuple[float, str]] = []
            cur = currency[i]
            if ratio_hi[i] < limit and avg[i]:
                found.append((ratio_hi[i], f"amount {_times(amount[i] / avg[i])} the customer's average "
                                           f"({_money(avg[i], cur)} over {_orders(prior[i])})"))  # fmt: skip
            if ratio_lo[i] < limit and avg[i]:
                found.append((ratio_lo[i], f"amount only {_times(amount[i] / avg[i])} the customer's average "
                                           f"({_money(amount[i], cur)} vs {_money(avg[i], cur)})"))  # fmt: skip
            if amount_hi[i] < limit:
                pct = 100 * (1 - amount_hi[i])
                found.append((amount_hi[i], f"amount {_money(amount[i], cur)}, larger than {pct:.1f}% of orders"))
            if gap_lo[i] < limit and gap[i] is not None:
                found.append((gap_lo[i], f"only {_duration(gap[i])} after the customer's previous order"))
            if burst_rate is not None and burst[i]:
                found.append((burst_rate, _burst_reason(by_customer[i], by_device[i])))
            odd_hour = hour[i] is not None and ref.hour_share.get(int(hour[i]), 0.0) < 0.02
            at = f" at {int(hour[i]):02d}:00" if odd_hour else ""
            if new_device[i] and new_country[i]:
                rarity = (
                    min(ref.rates["is_new_device_known_customer"], ref.rates["is_new_ip_country_known_customer"]) / 2
                )
                found.append(
                    (rarity, f"new device and an IP in {ip[i]}, a country this customer never ordered from{at}")
                )
            elif new_device[i]:
                found.append((ref.rates["is_new_device_known_customer"], f"a device this customer never used{at}"))
            elif new_country[i]:
                found.append((ref.rates["is_new_ip_country_known_customer"],
                              f"IP in {ip[i]}, a country this customer never ordered from{at}"))  # fmt: skip
            if mismatch[i]:
                found.append(
                    (ref.rates["is_country_mismatch"], f"shipped to {ship[i]} but ordered from an IP in {ip[i]}")
                )
            if odd_hour and not (new_device[i] or new_country[i]):
                found.append(
                    (ref.hour_share.get(int(hour[i]), 0.0) * 4, f"ordered at {int(hour[i]):02d}:00, an unusual hour")
                )
            found.sort(key=lambda item: item[0])
            result[row] = [text for _, text in found[: self.max_reasons]]
        return result


@dataclass(frozen=True)
class AlertPolicy:
    """How the share of orders at or above the threshold is chosen (``fraud.alert_policy``, docs/fraud.md).

    ``budget``: ``alert_rate`` of the training orders alert, whatever their labels. ``precision``: the largest
    share whose top-scored training orders are fraud at least ``target_precision`` of the time (by the
    fraud-labels), so the threshold follows the shop's fraud rate; with fewer than ``min_labelled`` labelled
    frauds in training it falls back to the budget.
    """

    kind: str = "budget"
    alert_rate: float = 0.02
    target_precision: float = 0.5
    min_labelled: int = 20

    MIN_RATE, MAX_RATE = 0.001, 0.2  # a share outside these is a sign of bad labels, not of a shop

    def rate(self, raw: np.ndarray, labels: np.ndarray | None) -> tuple[float, str]:
        """The share of training orders to put at or above the threshold, and how it was chosen."""
        if self.kind == "budget":
            return self.alert_rate, "budget"
        y = None if labels is None else np.asarray(labels, dtype=bool)
        if y is None or len(y) != len(raw) or y.sum() < self.min_labelled:
            return self.alert_rate, f"budget (fewer than {self.min_labelled} labelled frauds in training)"
        hits = np.cumsum(y[np.argsort(-np.asarray(raw, dtype="float64"), kind="stable")])
        precision = hits / np.arange(1, len(y) + 1)
        reached = np.flatnonzero(precision >= self.target_precision)
        if not len(reached):
            return self.MIN_RATE, f"precision {self.target_precision} not reached: the smallest share"
        rate = float(np.clip((reached[-1] + 1) / len(y), self.MIN_RATE, self.MAX_RATE))
        return rate, f"precision {self.target_precision}"


def fit_calibrated(
    pipeline: Pipeline,
    kind: str,
    train: pd.DataFrame,
    *,
    alert_rate: float,
    threshold: float,
    y: np.ndarray | None = None,
    reason_max_share: float = 0.03,
    reasons_min_score: float = 50.0,
    metadata: dict | None = None,
    policy: AlertPolicy | None = None,
    labels: np.ndarray | None = None,
) -> FraudScorer:
    """Fit ``pipeline`` on ``train`` (with labels ``y`` for a classifier), then its calibration and reason reference.

    The calibration puts ``alert_rate`` of the training orders at or above ``threshold``, or the share the
    ``policy`` chooses from the training ``labels`` (recorded in ``metadata["alert_policy"]``)."""
    if kind == "isolation_forest":
        pipeline.fit(train)
    else:
        pipeline.fit(train, y)
    scorer = FraudScorer(
        pipeline=pipeline,
        kind=kind,
        calibration=ScoreCalibration(np.array([0.0, 1.0]), np.array([0.0, 100.0]), alert_rate, threshold),
        reference=ReasonReference.fit(
            pipeline.named_steps["features"].derive(train), _float(train, "hour_of_day"), reason_max_share
        ),
        reasons_min_score=reasons_min_score,
        metadata=dict(metadata or {}),
        input_columns=tuple(c for c in INPUT_COLUMNS if c in train.columns),
    )
    raw = scorer.raw_scores(train)
    if policy is not None:
        alert_rate, how = policy.rate(raw, labels)
        scorer.metadata["alert_policy"] = how
    scorer.calibration = ScoreCalibration.fit(raw, alert_rate, threshold)
    return scorer


def model_input(pdf: pd.DataFrame, columns: tuple[str, ...] = INPUT_COLUMNS) -> pd.DataFrame:
    """The scorer's input columns with stable dtypes (float features, bool flags, string context); a column
    ``pdf`` lacks is missing (NaN) for every row."""
    out = pd.DataFrame(index=pdf.index)
    for name in columns:
        if name.startswith("is_"):
            out[name] = _flag(pdf, name)
        elif name in CONTEXT_COLUMNS:
            out[name] = pdf[name].fillna("").astype(str) if name in pdf else ""
        else:
            out[name] = pd.to_numeric(pdf[name], errors="coerce").astype("float64") if name in pdf else np.nan
    return out


try:  # the MLflow wrapper; the scorer itself needs no MLflow
    import mlflow.pyfunc

    class FraudPyfunc(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc wrapper: ``predict`` returns fraud_score and fraud_reasons for each input row."""

        def __init__(self, scorer: FraudScorer):
            self.scorer = scorer

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            return self.scorer.score(model_input)

except ImportError:  # pragma: no cover
    FraudPyfunc = None  # type: ignore[assignment,misc]
