rule library_stamp:
    input:
        library_files,
    output:
        "results/library/{script}.sha256",
    log:
        "results/logs/library/{script}.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/library_stamp.py"
