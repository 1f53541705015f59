"""The harness dashboard: `harness app` (or `streamlit run apps/dashboard/app.py`).

One file per page under pages/; runs come from $INTERP_HARNESS_RUNS or ./runs."""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).parent
PAGES = [
    ("runs.py", "Runs", ":material/folder_open:"),
    ("evaluation.py", "Evaluation", ":material/bar_chart:"),
    ("activations.py", "Activations", ":material/bolt:"),
    ("features.py", "Features", ":material/scatter_plot:"),
    ("circuits.py", "Circuits", ":material/account_tree:"),
    ("model_diff.py", "Model diff", ":material/compare_arrows:"),
    ("crosscoder.py", "Crosscoder", ":material/join_inner:"),
    ("probes.py", "Probes & steering", ":material/explore:"),
]

st.set_page_config(page_title="interp-harness", layout="wide")
navigation = st.navigation([st.Page(HERE / "pages" / file, title=title, icon=icon, default=i == 0)
                            for i, (file, title, icon) in enumerate(PAGES)])
navigation.run()
