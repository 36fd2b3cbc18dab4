"""Downstream models trained on synthex data (SyntheX's hip, tool and COVID-19 tasks).

    tasks       task declarations (classes, landmarks, metrics): TASKS, get_task, register_task
    data        readers (synthex, COCO, DeepFluoro/SyntheX HDF5, image folder), subject-level splits
    models      MONAI U-Net with segmentation + landmark-heatmap heads
    losses      Dice + cross-entropy + heatmap KL
    metrics     Dice, landmark error (px, mm), confusion metrics, AUC, subject-clustered bootstrap CI
    train       the training loop (TrainConfig, train, checkpoints)
    inference   ModelPredictor; probabilities -> labels, landmarks, lesion probability / fraction
    detection   scored boxes from probability maps; COCO AP (pycocotools' COCOeval) with clustered CIs
    evaluation  per-image metrics of any predictor; summaries
    report      metrics.json, report.md with figures, model card
    run         train_downstream / evaluate_checkpoint (what the CLI calls)
    predict     predict_files: a trained model on unlabelled X-rays (``synthex predict``)

Needs the ``train`` extra (torch, MONAI, kornia, matplotlib). Imports nothing of
``synthex`` but its dataset reader.
"""
