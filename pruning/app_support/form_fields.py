"""The launch form's fields as data (no Streamlit): widget kind, label and widget options per dotted
:class:`~pruning.config.run_config.RunConfig` key, the sections they are shown in, the corpora and metrics the
selects offer, and each allocation strategy's own knobs (from the strategy registry). The form's logic —
values to a validated config, the allowed roots, sweep grids — is :mod:`pruning.app_support.launch`."""

from __future__ import annotations

from pruning.allocation.registry import STRATEGY_SPECS
from pruning.config.presets import preset_names
from pruning.config.run_config import DTYPES, STRATEGIES
from pruning.methods.registry import method_names

# ---- the launch form (widget kind, label and widget options per dotted RunConfig key) ----------------------
METRIC_CHOICES = [
    "alpha_peak",
    "alpha",
    "alpha_mid",
    "alpha_weighted",
    "stable_rank",
    "entropy_norm",
    "log_spectral_norm",
    "hessian_alpha",
    "hessian_alpha_peak",
    "depth",  # the block index (pruning.allocation.linear.DEPTH_METRIC): ATP's slope, or mixed with a metric
]
# corpora of pruning.text.data.CORPORA with splits of its CORPUS_SPLITS (not imported: it pulls in torch); plain
# "wiki" is the use's own split (calib / test); wiki:train calibrates apart from wiki:validation, on which
# allocation knobs are chosen. text:PATH is typed in.
CALIBRATION_CORPORA = ["wiki", "wiki:train", "wiki:validation", "lee", "wikitext2", "c4"]
EVAL_CORPORA = ["wiki", "wiki:validation", "wiki:train", "lee", "wikitext2", "c4"]
#: the knobs of one allocation strategy: the form shows (and sends) them only for that strategy
STRATEGY_FIELDS: dict[str, tuple[str, ...]] = {s.name: s.form_knobs for s in STRATEGY_SPECS if s.form_knobs}
FORM_FIELDS: dict[str, tuple[str, str, dict]] = {  # dotted RunConfig key -> (widget, label, options)
    "model.name": ("text", "Model (alias, local directory, .gguf file or hub id)", {"value": "smollm2-135m"}),
    "model.dtype": ("select", "dtype", {"options": list(DTYPES)}),
    "model.device": ("text", "Device", {"value": "cpu"}),
    "pruning.method": ("select", "Method", {"options": list(method_names()), "index": 2}),  # see form_field
    "pruning.sparsity": ("float", "Sparsity (target, 0..1)", {"value": 0.7, "step": 0.05, "format": "%.3f"}),
    "pruning.nm": ("text", "N:M (blank = unstructured)", {"value": ""}),
    "allocation.strategy": ("select", "Allocation strategy", {"options": list(STRATEGIES), "index": 1}),
    "allocation.preset": (
        "text",
        "Layer-group preset (blank = none)",
        {"value": "", "placeholder": "QKVout + split", "help": "A notes column header: " + ", ".join(preset_names())},
    ),
    "allocation.metric": ("select", "Metric", {"options": METRIC_CHOICES, "accept_new_options": True}),
    "allocation.metric_mix": ("select", "Mixed with metric (blank = off)", {
        "options": ["", *METRIC_CHOICES], "accept_new_options": True, "format_func": lambda m: m or "(off)",
        "help": "linear only: the unit's normalised score is the mean of both metrics' min-max normalised "
        "scores, e.g. hessian_alpha mixed with alpha_peak (docs/allocation.md)"}),
    "allocation.epsilon": ("float", "ε (allocation spread)", {"value": 0.2, "step": 0.01, "format": "%.3f"}),
    "allocation.dlp_alpha": ("float", "DLP α (spread ±α around the target)", {
        "value": 0.15, "step": 0.01, "format": "%.3f", "help": "DLP (Chen et al., ICML 2025); 0.15 in its tables"}),
    "allocation.dlp_statistic": ("select", "DLP unimportance", {
        "options": ["median", "mean"], "help": "per-block statistic of the Wanda scores: median (the paper) "
        "or mean (the reference code's unstructured path)"}),
    "allocation.depth_beta": ("float", "ATP β (sparsity step per block)", {
        "value": None, "step": 0.002, "format": "%.4f", "placeholder": "required, e.g. 0.004",
        "help": "ATP (Huang et al., ICML 2025): block i gets S + β (i - mean i); no default, choose it "
        "on wiki:validation (the paper searches 0.002, 0.004, ...)"}),
    "allocation.probe_block": ("int", "Probed block (0 = the first)", {
        "value": None, "placeholder": "required, e.g. 0",
        "help": "strategy probe: only this block is pruned, at the sparsity above; the others stay dense "
        "(one point of a per-block sensitivity profile)"}),
    "allocation.kl_spread": ("float", "KL-slope spread λ", {
        "value": 0.1, "step": 0.025, "format": "%.3f",
        "help": "ours v4b (strategy kl_slope): sparsities spread over 2 λ around the target from each block's "
        "measured KL slope (the KL windows: EvoPress fitness windows); choose λ on wiki:validation"}),
    "allocation.evopress_generations": ("int", "EvoPress generations", {
        "value": 50, "help": "generations of the (1 + λ) evolution (Sieberling et al., ICML 2025)"}),
    "allocation.evopress_offspring": ("int", "EvoPress offspring per generation", {"value": 16}),
    "allocation.evopress_levels": ("int", "EvoPress levels each way", {
        "value": 8, "help": "sparsity levels above and below the target per matrix; every level is the same "
        "number of weights, so switching levels keeps the mean exact"}),
    "allocation.evopress_windows": ("int", "EvoPress fitness windows", {
        "value": 8, "help": "calibration windows the KL fitness reads (at most calibration samples; never test "
        "or validation text)"}),
    "allocation.evopress_units": ("select", "EvoPress units", {
        "options": ["matrix", "block"], "help": "what gets a level: every matrix (the paper) or every block"}),
    "allocation.evopress_start": ("select", "EvoPress start", {
        "options": ["uniform", "additive"], "help": "uniform (the paper), or the levels minimising the sum of "
        "each unit's KL measured alone (SPDY's programme); 0 generations = that programme alone"}),
    "calibration.dataset": ("select", "Calibration text", {
        "options": CALIBRATION_CORPORA, "accept_new_options": True,
        "help": "wiki = its calib split; wiki:train = calib without the validation text; or text:PATH"}),
    "calibration.nsamples": ("int", "Calibration samples", {"value": 128}),
    "calibration.seqlen": ("int", "Calibration length (tokens)", {"value": 2048}),
    "calibration.batch_size": (
        "int",
        "Samples per block call",
        {"value": 1, "help": "1 = the papers' loop; 8-32 is faster for small models on a GPU (a different run id)"},
    ),
    "evaluation.perplexity": (
        "multi",
        "Perplexity on",
        {"options": EVAL_CORPORA, "default": ["wiki"], "accept_new_options": True,
         "help": "wiki = its test split; wiki:validation = held-out text for choosing knobs; or text:PATH"},
    ),
    "evaluation.seqlen": ("int", "Perplexity window (tokens)", {"value": 2048}),
    "evaluation.limit_windows": ("int", "Windows (0 = all)", {"value": 16}),
    "evaluation.zeroshot_tasks": (
        "multi",
        "Zero-shot tasks",
        {
            "options": ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"],
            "default": [],
        },
    ),
    "evaluation.attention": ("check", "Attention statistics", {"value": False}),
    "label": ("text", "Label", {"value": ""}),
    "tags": ("text", "Tags (comma separated)", {"value": ""}),
}
FORM_SECTIONS = {
    "Model": ["model.name", "model.dtype", "model.device"],
    "Pruning": ["pruning.method", "pruning.sparsity", "pruning.nm"],
    "Allocation": list(dict.fromkeys([  # a knob two strategies read (the KL windows) is one field
        "allocation.strategy", "allocation.preset", "allocation.metric", *STRATEGY_FIELDS["linear"],
        "allocation.epsilon", *(f for name, fields in STRATEGY_FIELDS.items() if name != "linear" for f in fields)])),
    "Calibration": ["calibration.dataset", "calibration.nsamples", "calibration.seqlen", "calibration.batch_size"],
    "Evaluation": [
        "evaluation.perplexity",
        "evaluation.seqlen",
        "evaluation.limit_windows",
        "evaluation.zeroshot_tasks",
        "evaluation.attention",
    ],
    "Annotations": ["label", "tags"],
}
