"""Circuits & similarity: what a feature map does to the cases, and how well it tells them apart."""
import io
import json

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import components as ui
from dashboard.auth import guard
from dashboard.state import config, qiskit_ready, tasks

actor = guard("circuits")
st.title("Circuits & similarity")
backend = ui.backend_or_stop()
try:
    qiskit_ready()  # qiskit must be imported by a long-lived thread, never by this rerun's thread
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, "load qiskit")
    st.stop()

try:
    from qcbr.encoding import ENTANGLEMENTS, FEATURE_MAPS, get_feature_map
    from qcbr.preprocessing import Preprocessor
    from qcbr.similarity import CaseMemory, fidelity_matrix, kernel_diagnostics
except ModuleNotFoundError as exc:
    ui.empty_state("The quantum engine is not installed", f"This checkout lacks `{exc.name}`.")
    st.stop()

DEVICES = ["fake_manila", "fake_lima", "fake_quito", "fake_nairobi", "fake_perth", "fake_guadalupe",
           "fake_kolkata", "fake_brisbane", "fake_sherbrooke"]
MAX_OPTIONS = 300  # case choices offered in the pickers (the nearest-case search covers every case)
MEMORY_BUDGET = 1 << 23  # amplitudes held for the nearest-case search (128 MiB of complex128)
DIAG_SAMPLE = 200
MAX_IMAGE_WIDTH = 1400  # below st.image's own limit (1460 px)


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=4)
def load_version(home: str, name: str, sha: str):
    return backend.load_dataset(name, sha)


@st.cache_resource(show_spinner="Scaling the cases to angles…", max_entries=8)
def angles(home: str, name: str, sha: str, n_components: int) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    cb = load_version(home, name, sha)
    pre = Preprocessor(n_components=n_components).fit(cb.features)
    return pre.transform(cb.features), cb.case_ids, [str(v) for v in cb.y.tolist()], list(pre.output_names_)


@st.cache_resource(show_spinner="Building the case memory…", max_entries=4)
def memory(home: str, name: str, sha: str, n_components: int, fm_key: str, limit: int):
    X = angles(home, name, sha, n_components)[0][:limit]
    return CaseMemory(feature_map_from(fm_key), X)


@st.cache_resource(show_spinner="Searching the nearest cases…", max_entries=64)
def nearest(home: str, name: str, sha: str, n_components: int, fm_key: str, limit: int, query: int,
            k: int) -> list[tuple[int, float]]:
    X = angles(home, name, sha, n_components)[0]
    idx, scores = memory(home, name, sha, n_components, fm_key, limit).top_k(X[[query]], k + 1)
    return [(int(i), float(s)) for i, s in zip(idx[0], scores[0]) if int(i) != query][:k]


@st.cache_resource(show_spinner="Computing the kernel diagnostic…", max_entries=8)
def diagnostic(home: str, name: str, sha: str, n_components: int, fm_key: str) -> tuple[dict, np.ndarray]:
    X = angles(home, name, sha, n_components)[0]
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(X), size=min(DIAG_SAMPLE, len(X)), replace=False))
    fm = feature_map_from(fm_key)
    K = fidelity_matrix(X[idx], X[idx], fm)
    return kernel_diagnostics(K, feature_map=fm), K[~np.eye(len(K), dtype=bool)]


def feature_map_from(fm_key: str):
    spec = json.loads(fm_key)
    return get_feature_map(spec.pop("name"), spec.pop("n_qubits"), **spec)


@st.cache_data(show_spinner="Drawing the circuit…", max_entries=64)
def circuit_png(fm_key: str, x: tuple[float, ...]) -> bytes:
    """The drawn circuit, keyed by map, parameters and the (rounded) input row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qc = feature_map_from(fm_key).circuit(np.asarray(x))
    fig = qc.draw("mpl", fold=40)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    from PIL import Image

    image = Image.open(io.BytesIO(buf.getvalue()))
    if image.width > MAX_IMAGE_WIDTH:  # else st.image resizes it again on every rerun
        image = image.resize((MAX_IMAGE_WIDTH, int(image.height * MAX_IMAGE_WIDTH / image.width)))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
    return buf.getvalue()


@st.cache_data(show_spinner="Transpiling…", max_entries=64)
def circuit_stats(fm_key: str, x: tuple[float, ...], device: str | None) -> dict:
    qc = feature_map_from(fm_key).circuit(np.asarray(x))
    out = {"depth": qc.depth(), "ops": {k: int(v) for k, v in qc.count_ops().items()}, "qubits": qc.num_qubits}
    if device:
        from qiskit import transpile

        from qcbr.similarity import fake_device

        dev = fake_device(device)
        if dev.num_qubits < qc.num_qubits:
            out["device_error"] = f"{device} has {dev.num_qubits} qubits; this circuit needs {qc.num_qubits}."
        else:
            tq = transpile(qc, backend=dev, optimization_level=1, seed_transpiler=0)
            out.update(t_depth=tq.depth(), t_ops={k: int(v) for k, v in tq.count_ops().items()},
                       device_qubits=dev.num_qubits)
    return out


def run_sampled(XQ, fm_key, shots, method, noise, progress=None):
    from qcbr.similarity import sampled_fidelity_matrix

    # a separate copy for the stored side: sampled_fidelity_matrix (at 0d41673) tells the two sides
    # apart by identity, and given the same array twice it samples every pair as (x, x) -> 1.0
    return sampled_fidelity_matrix(XQ, XQ.copy(), feature_map_from(fm_key), shots=shots, method=method,
                                   noise=noise, seed=7, progress=progress)


# ------------------------------------------------------------------------------------ choices
records = ui.fetch("list_datasets", default=[]) or []
if not records:
    ui.empty_state("No cases to encode yet", "Upload a case base on **Cases** (or seed the demo), then come back "
                   "to see its circuits and similarities.")
    ui.demo_panel(actor, key="circuits_demo")
    st.stop()

home = str(config().home)
with st.sidebar:
    st.markdown("**Encoding**")
    names = sorted({r["DatasetName"] for r in records})
    name = st.selectbox("Dataset", names, key="circ_dataset")
    version = next(r for r in records if r["DatasetName"] == name)  # newest version
    fm_name = st.selectbox("Feature map", FEATURE_MAPS, index=FEATURE_MAPS.index("zz"), key="circ_map")
    n_qubits = int(st.number_input("Qubits", min_value=1, max_value=10, value=4, key="circ_qubits"))
    params: dict = {}
    if fm_name == "zz":
        params["reps"] = int(st.number_input("Repetitions", min_value=1, max_value=4, value=2, key="circ_reps"))
        params["entanglement"] = st.selectbox("Entanglement", ENTANGLEMENTS, key="circ_ent")
        params["alpha"] = float(st.number_input("alpha (bandwidth)", min_value=0.01, max_value=4.0, value=2.0,
                                                step=0.1, key="circ_alpha"))

n_components = 2 ** n_qubits if fm_name == "amplitude" else n_qubits
X = ids = labels = None
with ui.attempt("scale the cases"):
    X, ids, labels, outputs = angles(home, name, version["Sha256"], n_components)
if X is None:
    st.stop()
if fm_name == "amplitude":
    params["n_features"] = X.shape[1]
elif X.shape[1] < n_qubits:
    st.info(f"{name} has only {X.shape[1]} features after encoding, so {X.shape[1]} qubits are used.")
    n_qubits = X.shape[1]
fm_key = json.dumps({"name": fm_name, "n_qubits": n_qubits, **params}, sort_keys=True)
fm = None
with ui.attempt("build the feature map"):
    fm = feature_map_from(fm_key)
if fm is None:
    st.stop()

options = list(range(min(len(ids), MAX_OPTIONS)))
selected = st.multiselect("Cases to compare", options, default=options[: min(4, len(options))],
                          format_func=lambda i: f"{ids[i]} ({labels[i]})", key="circ_cases", max_selections=12)
query = st.selectbox("Query case (drawn below; its nearest stored cases are searched)", options,
                     format_func=lambda i: f"{ids[i]} ({labels[i]})", key="circ_query")
st.caption(f"{len(ids):,} cases · inputs: {', '.join(outputs[:8])}{'…' if len(outputs) > 8 else ''} "
           f"(scaled to angles in [0, π]{', PCA' if outputs and outputs[0] == 'pc1' else ''})")

circuit_tab, similarity_tab, sampled_tab, diag_tab = st.tabs(
    ["Circuit", "Similarity", "Exact vs sampled", "Kernel diagnostic"])

# -------------------------------------------------------------------------------------- circuit
with circuit_tab:
    xq = tuple(round(float(v), 10) for v in X[query])
    device = st.selectbox("Transpile for a fake IBM device", ["(none)"] + DEVICES, key="circ_device")
    with ui.attempt("draw the circuit"):
        st.image(circuit_png(fm_key, xq), caption=f"{fm_name} feature map for {ids[query]}")
        stats = circuit_stats(fm_key, xq, None if device == "(none)" else device)
        cols = st.columns(4)
        cols[0].metric("Depth", stats["depth"])
        cols[1].metric("Gates", sum(stats["ops"].values()))
        if "t_depth" in stats:
            cols[2].metric(f"Depth on {device}", stats["t_depth"], delta=stats["t_depth"] - stats["depth"],
                           delta_color="inverse")
            cols[3].metric("Gates transpiled", sum(stats["t_ops"].values()))
        elif "device_error" in stats:
            st.warning(stats["device_error"])
        st.plotly_chart(ui.figure("gate_counts", stats["ops"], stats.get("t_ops")), key="circ_gates")

# ----------------------------------------------------------------------------------- similarity
with similarity_tab:
    if len(selected) >= 2:
        K = fidelity_matrix(X[selected], X[selected], fm)
        st.plotly_chart(ui.figure("similarity_heatmap", K, [f"{ids[i]} ({labels[i]})" for i in selected]),
                        key="circ_heatmap")
    else:
        st.info("Pick at least two cases above to see their pairwise fidelities.")
    k = int(st.number_input("Nearest cases to show", min_value=1, max_value=25, value=8, key="circ_k"))
    limit = min(len(X), max(1, MEMORY_BUDGET // fm.dim)) if hasattr(fm, "dim") else len(X)
    with ui.attempt("search the nearest cases"):
        pairs = nearest(home, name, version["Sha256"], n_components, fm_key, limit, int(query), k)
        st.plotly_chart(ui.figure("nearest_cases", [ids[i] for i, _ in pairs], [s for _, s in pairs],
                                  [labels[i] for i, _ in pairs], title=f"Nearest cases to {ids[query]}"),
                        key="circ_nearest")
        if limit < len(X):
            st.caption(f"Searched the first {limit:,} of {len(X):,} cases (memory budget for 2^{n_qubits} amplitudes).")

# -------------------------------------------------------------------------------------- sampled
with sampled_tab:
    st.caption("The exact fidelity comes from statevectors; the sampled one from running the compute-uncompute "
               "(or swap-test) circuit on qiskit-aer with shots, optionally with noise — what real hardware gives.")
    c1, c2, c3 = st.columns(3)
    shots = c1.select_slider("Shots", [128, 256, 512, 1024, 2048, 4096, 8192], value=1024, key="circ_shots")
    method = c2.selectbox("Method", ["compute_uncompute", "swap"], key="circ_method")
    noise_kind = c3.selectbox("Noise", ["none", "depolarising", "fake device"], key="circ_noise_kind")
    noise = None
    if noise_kind == "depolarising":
        noise = float(st.slider("Depolarising level p", 0.0, 0.1, 0.01, 0.005, key="circ_noise_p"))
    elif noise_kind == "fake device":
        noise = st.selectbox("Device noise model", DEVICES, key="circ_noise_dev")
    if len(selected) < 2:
        st.info("Pick at least two cases above.")
    elif st.button("Run sampled comparison", key="circ_run_sampled", icon=":material/play_arrow:"):
        task_id = tasks().submit("sampled similarity", actor.name, run_sampled, X[selected], fm_key, int(shots),
                                 method, noise)
        st.session_state["qcbr_circ_task"] = {"id": task_id, "selected": list(selected), "fm_key": fm_key,
                                              "shots": int(shots)}

    job = st.session_state.get("qcbr_circ_task")
    task = tasks().get(job["id"]) if job else None
    polling = task is not None and not task.done
    st.session_state["qcbr_circ_polling"] = polling

    @st.fragment(run_every=1.0 if polling else None)
    def sampled_result() -> None:
        task = tasks().get(job["id"]) if job else None
        if task is None:
            return
        if not task.done:
            st.progress(task.fraction, text=f"Sampling… {task.message}")
            return
        if st.session_state.pop("qcbr_circ_polling", False):
            st.rerun(scope="app")  # a full run redraws this without run_every: else it reruns every second
        if task.error is not None:
            ui.show_error(task.error, "sample the fidelities")
            return
        sel = job["selected"]
        exact = fidelity_matrix(X[sel], X[sel], feature_map_from(job["fm_key"]))
        sampled = task.result
        iu = np.triu_indices(len(sel), k=1)
        st.plotly_chart(ui.figure("exact_vs_sampled", exact[iu], sampled[iu], job["shots"]), key="circ_sampled_fig")
        table = pd.DataFrame({"case a": [ids[sel[i]] for i in iu[0]], "case b": [ids[sel[j]] for j in iu[1]],
                              "exact": exact[iu], "sampled": sampled[iu]})
        table["abs error"] = (table["exact"] - table["sampled"]).abs()
        st.dataframe(table, hide_index=True, key="circ_sampled_table")
        st.caption(f"Mean absolute error {table['abs error'].mean():.4f} over {len(table)} pairs "
                   f"({job['shots']} shots; shot noise alone gives about {np.sqrt(0.25 / job['shots']):.3f}).")

    sampled_result()

# ----------------------------------------------------------------------------------- diagnostic
with diag_tab:
    with ui.attempt("compute the kernel diagnostic"):
        diag, offdiag = diagnostic(home, name, version["Sha256"], n_components, fm_key)
        cols = st.columns(3)
        cols[0].metric("Mean off-diagonal fidelity", f"{diag['mean_offdiag']:.3f}")
        cols[1].metric("Spread (std)", f"{diag['std_offdiag']:.3f}")
        cols[2].metric("Effective rank", f"{diag['effective_rank']:.1f}")
        (st.warning if diag["concentrated"] else st.success)(diag["hint"])
        st.plotly_chart(ui.figure("kernel_spread", offdiag, n_qubits), key="circ_kernel_fig")
        st.caption(f"Over a sample of {min(DIAG_SAMPLE, len(X))} cases.")
