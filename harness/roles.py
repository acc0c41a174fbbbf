"""The split roles (a torch-free module: the leaderboard reads them without loading torch;
harness.data names them for the dataset plugins)."""

# ood_val: OOD validation (OpenOOD v1.5), used only to tune scorers (harness/tuning.py)
ROLES = ("train", "val", "id_test", "shift_test", "ood", "unlabeled", "ood_val")
# Roles whose labels live in the benchmark's label space (accuracy is defined on them).
LABELED_ROLES = ("train", "val", "id_test", "shift_test")
