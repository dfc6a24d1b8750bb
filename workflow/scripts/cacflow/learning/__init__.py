"""The classifiers: splits, augmentation, input pipelines, networks, training, the model
file, Grad-CAM and the scoring of an external cohort."""
