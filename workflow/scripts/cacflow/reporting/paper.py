"""The published numbers we compare with: Lee, S.; Rim, B.; Jou, S.-S.; Gil, H.-W.; Jia, X.;
Lee, A.; Hong, M. Deep-Learning-Based Coronary Artery Calcium Detection from CT Image.
Sensors 2021, 21, 7059.

- Table 1 ("Computational cost comparison", section 5.1): parameters as printed and
  inference time per image, measured on an NVIDIA GeForce RTX 2080 (the setup of 5.1).
- Table 3 ("Results of validation and test accuracy for each model", section 6):
  validation and test accuracy in percent per dataset and model.

The paper's names map to ours: datasets "Original coronary artery calcium score CT-data",
"Cardiac segmented data", "Cardiac cropped data" are original, segmented, cropped
(cacflow.imaging.datasets.DATASETS); models "Resnet 50" / "Resnet-50", "Resnet v2" (Inception
ResNet v2, as the abstract and section 6 name it) and "VGG" are resnet50, inception_resnet_v2 and vgg16 (the
paper shows VGG16 and VGG19 in Figure 1 and does not say which it trained; 16 is assumed).

Table 1 is kept as printed, although it cannot be the parameter counts of these networks:
Keras' ResNet50 without its top has 23.59 million parameters (close to the 23.53 m printed
for "Resnet v2"), InceptionResNetV2 54.34 million and VGG16 14.71 million (138.36 million
with its 1000-class top). The comparison with our results uses Table 3 only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cacflow.reporting.metrics import select_rows

PAPER_GPU = "NVIDIA GeForce RTX 2080"
PAPER_MODELS = {"Resnet 50": "resnet50", "Resnet v2": "inception_resnet_v2", "VGG": "vgg16"}
PAPER_DATASETS = {
    "Original coronary artery calcium score CT-data": "original",
    "Cardiac segmented data": "segmented",
    "Cardiac cropped data": "cropped",
}

# Table 1, in the paper's order.
TABLE1 = (
    {
        "model": "resnet50",
        "paper_model": "Resnet 50",
        "parameters": "1.46 m",
        "parameters_millions": 1.46,
        "inference_ms_per_image": 24.0,
        "gpu": PAPER_GPU,
    },
    {
        "model": "inception_resnet_v2",
        "paper_model": "Resnet v2",
        "parameters": "23.53 m",
        "parameters_millions": 23.53,
        "inference_ms_per_image": 74.0,
        "gpu": PAPER_GPU,
    },
    {
        "model": "vgg16",
        "paper_model": "VGG",
        "parameters": "118.25 m",
        "parameters_millions": 118.25,
        "inference_ms_per_image": 102.0,
        "gpu": PAPER_GPU,
    },
)

# Table 3: (dataset, model) -> (validation accuracy %, test accuracy %), in the paper's order.
TABLE3_PCT = {
    ("original", "resnet50"): (88.95, 81.08),
    ("original", "inception_resnet_v2"): (52.24, 51.47),
    ("original", "vgg16"): (84.33, 61.23),
    ("segmented", "resnet50"): (67.02, 81.56),
    ("segmented", "inception_resnet_v2"): (51.37, 48.57),
    ("segmented", "vgg16"): (89.31, 73.25),
    ("cropped", "resnet50"): (99.08, 98.52),
    ("cropped", "inception_resnet_v2"): (87.53, 80.23),
    ("cropped", "vgg16"): (86.59, 96.20),
}

TABLE3_COMPARISON_COLUMNS = (
    "dataset",
    "model",
    "paper_accuracy",
    "our_accuracy",
    "our_ci_low",
    "our_ci_high",
)


def paper_test_accuracy(dataset: str, model: str) -> float:
    """The paper's test accuracy of a dataset and model (our names), as a fraction."""
    return TABLE3_PCT[(dataset, model)][1] / 100


def table3_comparison(our_metric_rows: Iterable[Mapping], split: str = "test") -> list[dict]:
    """One row per cell of Table 3 (paper order): the paper's test accuracy beside ours
    (`split`, image level) with its bootstrap interval, all as fractions; ours are NaN
    where that dataset x model was not run. `our_metric_rows` are rows of
    results/metrics.tsv (cacflow.reporting.metrics.metrics_rows, or read back as strings); columns
    TABLE3_COMPARISON_COLUMNS."""
    ours = {(r["dataset"], r["model"]): r for r in select_rows(our_metric_rows, split, "image")}
    rows = []
    for dataset, model in TABLE3_PCT:
        row = ours.get((dataset, model))
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "paper_accuracy": paper_test_accuracy(dataset, model),
                "our_accuracy": float(row["accuracy"]) if row else float("nan"),
                "our_ci_low": float(row["accuracy_ci_low"]) if row else float("nan"),
                "our_ci_high": float(row["accuracy_ci_high"]) if row else float("nan"),
            }
        )
    return rows
