rule library_stamp:
    input:
        library_files,
    output:
        "results/library/{modules}.sha256",
    log:
        "results/logs/library/{modules}.log",
    localrule: True
    conda:
        "../../envs/dicom.yaml"
    script:
        "../scripts/library_stamp.py"
