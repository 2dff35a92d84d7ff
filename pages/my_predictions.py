"""My predictions: the questions this user asked, what the model answered, and the outcomes."""
import streamlit as st

from dashboard import components as ui
from dashboard.auth import guard
from dashboard.state import clear_listings

actor = guard("my_predictions")
st.title("My predictions")
backend = ui.backend_or_stop()

LIMIT = 2000
records = ui.fetch("list_predictions", default=[], user=actor.name, limit=LIMIT) or []
if not records:
    ui.empty_state("No predictions yet", "Ask the model something on **Predict**; every answer you get is kept here "
                   "with its confidence, and you can tell us the real outcome later.")
    st.stop()
truth = ui.fetch("list_ground_truth", default=[]) or []
rows = ui.prediction_rows(records, truth)
rows = rows.sort_values("time", ascending=False, na_position="last").reset_index(drop=True)

labelled = rows["true_label"].notna()
correct = rows.loc[labelled, "correct"].astype(bool)
ui.metric_row([
    ("Predictions", f"{len(rows):,}{'+' if len(records) >= LIMIT else ''}"),
    ("Flagged (low confidence)", int(rows["flagged"].sum())),
    ("With feedback", int(labelled.sum())),
    ("Correct where known", f"{100 * correct.mean():.0f}%" if len(correct) else None),
])
show = st.radio("Show", ["all", "awaiting feedback", "flagged"], horizontal=True, key="mine_filter")
view = rows
if show == "awaiting feedback":
    view = rows[~labelled]
elif show == "flagged":
    view = rows[rows["flagged"]]
ui.paged_table(view.reset_index(drop=True), key="mine_table", page_size=25,
               sortable=["time", "endpoint", "label", "confidence", "true_label"],
               column_config={"confidence": st.column_config.ProgressColumn("confidence", min_value=0, max_value=1,
                                                                             format="%.2f")})

awaiting = rows[~labelled]
if len(awaiting):
    st.subheader("Give feedback")
    with st.form("mine_feedback", border=True):
        options = awaiting["inference_id"].head(200).tolist()
        by_id = awaiting.set_index("inference_id")
        iid = st.selectbox("Prediction", options, key="mine_feedback_id",
                           format_func=lambda i: f"{by_id.loc[i, 'time']} · predicted {by_id.loc[i, 'label']}")
        true_label = st.text_input("True outcome", key="mine_feedback_label")
        sent = st.form_submit_button("Send feedback", type="primary")
    if sent:
        if not true_label.strip():
            st.error("Type the true outcome (the label the case really had).")
        else:
            with ui.attempt("record the feedback"):
                backend.submit_ground_truth(actor, iid, true_label.strip())
                clear_listings()
                st.rerun()
