"""English and Korean text of the app.

LABELS contains the static text of the page (tab names, field labels, buttons, headings). The browser translates
it through gr.I18n, by the browser's language. MESSAGES contains text that handlers build at run time (status lines,
errors, summaries); `message()` formats it in the language of the request's Accept-Language header. Breed names
and architecture names stay in English in both languages.

Every key of both tables must have a non-empty "en" and "ko" entry. LABELS keys must not equal one of gradio's
own translation groups (such as "status", "image" or "label"): the frontend would show "[object Object]".
"""

from __future__ import annotations

import re
from typing import Any

LANGUAGES: tuple[str, ...] = ("en", "ko")
DEFAULT_LANGUAGE = "en"

LABELS: dict[str, dict[str, str]] = {
    "app_title": {
        "en": "# Dog breeds: a CNN and a fully-connected network side by side",
        "ko": "# 개 품종 분류: CNN과 완전 연결 신경망 비교",
    },
    "app_intro": {
        "en": "Train models on the Stanford Dogs photos (120 breeds), then compare what a convolutional network and "
        "a fully-connected network (MLP) predict for the same photo.",
        "ko": "Stanford Dogs 사진(120개 품종)으로 모델을 학습시킨 다음, 같은 사진에 대해 합성곱 신경망(CNN)과 완전 연결 "
        "신경망(MLP)이 무엇을 예측하는지 비교해 보세요.",
    },
    "tab_train": {"en": "Train", "ko": "학습"},
    "tab_compare": {"en": "Compare", "ko": "비교"},
    "tab_results": {"en": "Results", "ko": "결과"},
    # Train tab
    "train_data_folder": {"en": "Data folder (one sub-folder per breed)", "ko": "데이터 폴더 (품종마다 하위 폴더 하나)"},
    "train_architecture": {"en": "Architecture", "ko": "모델 구조"},
    "train_device": {"en": "Device", "ko": "장치"},
    "train_epochs": {"en": "Epochs", "ko": "에포크 수"},
    "train_image_size": {"en": "Image size (pixels per side)", "ko": "이미지 크기 (한 변의 픽셀 수)"},
    "train_batch_size": {"en": "Batch size", "ko": "배치 크기"},
    "train_learning_rate": {
        "en": "Learning rate (0: default for the architecture)",
        "ko": "학습률 (0이면 모델 구조의 기본값)",
    },
    "train_pretrained": {
        "en": "Start from ImageNet weights (resnet18 only; downloads 45 MB once)",
        "ko": "ImageNet 가중치에서 시작 (resnet18 전용, 처음 한 번 45 MB 내려받음)",
    },
    "train_start": {"en": "Start training", "ko": "학습 시작"},
    "train_stop": {"en": "Stop", "ko": "중지"},
    "train_download": {"en": "Download Stanford Dogs here", "ko": "여기에 Stanford Dogs 내려받기"},
    "train_status": {"en": "Status", "ko": "상태"},
    "train_loss_plot": {"en": "Loss", "ko": "손실"},
    "train_accuracy_plot": {"en": "Accuracy", "ko": "정확도"},
    "train_log": {"en": "Log", "ko": "로그"},
    "train_summary": {"en": "Summary", "ko": "요약"},
    "train_confusion": {"en": "Confusion matrix (validation)", "ko": "혼동 행렬 (검증 데이터)"},
    "train_confused_pairs": {"en": "Most confused breeds", "ko": "가장 많이 혼동한 품종"},
    "train_run_folder": {"en": "Run folder", "ko": "실행 폴더"},
    # Compare tab
    "compare_photo": {"en": "Dog photo", "ko": "개 사진"},
    "compare_examples": {"en": "Example photos from the data folder", "ko": "데이터 폴더의 예시 사진"},
    "compare_cnn_run": {"en": "CNN run (custom_cnn or resnet18)", "ko": "CNN 실행 (custom_cnn 또는 resnet18)"},
    "compare_fcn_run": {"en": "Fully-connected run (resfcn18)", "ko": "완전 연결 신경망 실행 (resfcn18)"},
    "compare_button": {"en": "Compare", "ko": "비교하기"},
    "compare_refresh": {"en": "Refresh run lists", "ko": "실행 목록 새로 고침"},
    "compare_cnn_top5": {"en": "CNN: top 5", "ko": "CNN: 상위 5개"},
    "compare_fcn_top5": {"en": "Fully-connected: top 5", "ko": "완전 연결 신경망: 상위 5개"},
    "compare_message": {"en": "Messages", "ko": "메시지"},
    # Hub
    "hub_heading": {"en": "Load a run from the Hugging Face Hub", "ko": "Hugging Face Hub에서 실행 불러오기"},
    "hub_repo_id": {"en": "Repo id (owner/name)", "ko": "저장소 ID (owner/name)"},
    "hub_revision": {"en": "Revision (empty: main)", "ko": "리비전 (비워 두면 main)"},
    "hub_subfolder": {"en": "Subfolder (empty: repo root)", "ko": "하위 폴더 (비워 두면 저장소 최상위)"},
    "hub_load": {"en": "Load", "ko": "불러오기"},
    "hub_result": {"en": "Hub status", "ko": "Hub 상태"},
    # Results tab
    "results_refresh": {"en": "Refresh", "ko": "새로 고침"},
    "results_table": {"en": "Runs found", "ko": "찾은 실행"},
    "results_loss_curves": {"en": "Validation loss per epoch", "ko": "에포크별 검증 손실"},
    "results_top1_curves": {"en": "Validation top-1 accuracy per epoch", "ko": "에포크별 검증 top-1 정확도"},
}

MESSAGES: dict[str, dict[str, str]] = {
    # Data folder and download
    "data_folder_missing": {
        "en": "Data folder `{path}` not found. If the photos are already on this computer, check the spelling and "
        "enter the folder that holds one sub-folder per breed. Otherwise download Stanford Dogs (about 750 MB) "
        "there with the button below.",
        "ko": "데이터 폴더 `{path}`를 찾을 수 없습니다. 사진이 이미 이 컴퓨터에 있다면 철자를 확인하고, 품종마다 하위 "
        "폴더가 있는 폴더를 입력하세요. 없다면 아래 버튼으로 그곳에 Stanford Dogs(약 750 MB)를 내려받으세요.",
    },
    "data_folder_not_dir": {
        "en": "`{path}` is a file, not a folder. Enter the folder that holds one sub-folder per breed.",
        "ko": "`{path}`는 폴더가 아니라 파일입니다. 품종마다 하위 폴더가 있는 폴더를 입력하세요.",
    },
    "data_folder_invalid": {
        "en": "The data folder `{path}` cannot be used: {detail} You can also download Stanford Dogs into it.",
        "ko": "데이터 폴더 `{path}`를 사용할 수 없습니다: {detail} 그 폴더에 Stanford Dogs를 내려받을 수도 있습니다.",
    },
    "data_folder_outside_root": {
        "en": "On this Space the data folder must be inside `{root}`; `{path}` is outside it. Enter a folder such as "
        "`{example}`.",
        "ko": "이 Space에서는 데이터 폴더가 `{root}` 안에 있어야 합니다. `{path}`는 그 밖에 있습니다. `{example}` 같은 "
        "폴더를 입력하세요.",
    },
    "data_folder_ready": {
        "en": "Data folder `{path}`: {classes} breeds, {images} images.",
        "ko": "데이터 폴더 `{path}`: 품종 {classes}개, 이미지 {images}장.",
    },
    "download_started": {
        "en": "Downloading Stanford Dogs into `{path}` ...",
        "ko": "`{path}`에 Stanford Dogs를 내려받는 중 ...",
    },
    "download_progress": {
        "en": "Downloading `{file}`: {done} of {total} MB",
        "ko": "`{file}` 내려받는 중: {total} MB 중 {done} MB",
    },
    "download_progress_unknown": {
        "en": "Downloading `{file}`: {done} MB",
        "ko": "`{file}` 내려받는 중: {done} MB",
    },
    "download_done": {
        "en": "Stanford Dogs is ready in `{path}`. The data folder field now points there: press Start training.",
        "ko": "Stanford Dogs가 `{path}`에 준비되었습니다. 데이터 폴더 칸이 그곳을 가리킵니다. 학습 시작을 누르세요.",
    },
    "download_failed": {
        "en": "The download failed: {detail}",
        "ko": "내려받기에 실패했습니다: {detail}",
    },
    "download_busy": {
        "en": "A download is already running on this server. Wait for it to finish, then press the button again.",
        "ko": "이 서버에서 이미 내려받기가 진행 중입니다. 끝날 때까지 기다린 뒤 버튼을 다시 누르세요.",
    },
    "download_extracting": {
        "en": "Extracting `{file}`: {done} of {total} MB",
        "ko": "`{file}` 압축 푸는 중: {total} MB 중 {done} MB",
    },
    # Training
    "train_checking": {"en": "Checking the settings ...", "ko": "설정을 확인하는 중 ..."},
    "train_invalid_setting": {
        "en": "Invalid setting: {detail}",
        "ko": "잘못된 설정입니다: {detail}",
    },
    "train_epochs_capped": {
        "en": "This Space trains at most {limit} epochs and {images} images per run; epochs set to {limit}.",
        "ko": "이 Space에서는 한 번에 최대 {limit} 에포크, 이미지 {images}장까지 학습합니다. 에포크를 {limit}(으)로 "
        "맞췄습니다.",
    },
    "train_waiting": {
        "en": "Another training is running on this server; yours starts when it ends (waiting {seconds} s). Press "
        "Stop to leave the queue.",
        "ko": "이 서버에서 다른 학습이 진행 중입니다. 그 학습이 끝나면 시작합니다 ({seconds}초째 대기 중). 대기열에서 "
        "나가려면 중지를 누르세요.",
    },
    "train_already_running": {
        "en": "A training started from this page is still running. Stop it first, or wait until it ends.",
        "ko": "이 페이지에서 시작한 학습이 아직 진행 중입니다. 먼저 중지하거나 끝날 때까지 기다리세요.",
    },
    "train_preparing": {
        "en": "Preparing the data (the first run on a folder checks every image and builds a cache) ...",
        "ko": "데이터를 준비하는 중 (폴더에서 처음 학습할 때는 모든 이미지를 확인하고 캐시를 만듭니다) ...",
    },
    "train_started": {
        "en": "Training {arch} on {device}: {split}",
        "ko": "{device}에서 {arch} 학습 중: {split}",
    },
    "train_progress": {
        "en": "Epoch {epoch}/{epochs}, batch {batch}/{batches}, running loss {loss}",
        "ko": "에포크 {epoch}/{epochs}, 배치 {batch}/{batches}, 현재 손실 {loss}",
    },
    "train_epoch_done": {
        "en": "Epoch {epoch}/{epochs}: validation top-1 {top1}, top-5 {top5}",
        "ko": "에포크 {epoch}/{epochs}: 검증 top-1 {top1}, top-5 {top5}",
    },
    "train_stopping": {
        "en": "Stopping after the current batch ...",
        "ko": "현재 배치가 끝나면 중지합니다 ...",
    },
    "train_stopped": {
        "en": "Training stopped. The run folder keeps the last completed epoch ({epochs}).",
        "ko": "학습을 중지했습니다. 실행 폴더에는 마지막으로 완료한 에포크({epochs})가 남아 있습니다.",
    },
    "train_stopped_no_epoch": {
        "en": "Training stopped before the first epoch completed, so no run folder was kept.",
        "ko": "첫 에포크가 끝나기 전에 학습을 중지해서 실행 폴더가 남지 않았습니다.",
    },
    "train_stopped_waiting": {
        "en": "Stopped while waiting; this training never started.",
        "ko": "대기 중에 중지해서 이 학습은 시작되지 않았습니다.",
    },
    "train_finished": {
        "en": "Training finished after {epochs} epochs.",
        "ko": "{epochs} 에포크 후 학습을 마쳤습니다.",
    },
    "train_early_stopped": {
        "en": "Training ended early after {epochs} epochs: validation top-1 stopped improving.",
        "ko": "검증 top-1이 더 나아지지 않아 {epochs} 에포크 후 학습을 일찍 끝냈습니다.",
    },
    "train_failed": {
        "en": "Training failed: {detail}",
        "ko": "학습에 실패했습니다: {detail}",
    },
    "train_evaluating": {
        "en": "Evaluating the best epoch on the validation images for the confusion matrix ...",
        "ko": "혼동 행렬을 만들기 위해 가장 좋은 에포크를 검증 이미지로 평가하는 중 ...",
    },
    "train_evaluation_failed": {
        "en": "The confusion matrix could not be computed: {detail}",
        "ko": "혼동 행렬을 계산하지 못했습니다: {detail}",
    },
    "stop_requested": {
        "en": "Stop requested: the run ends after the current batch.",
        "ko": "중지를 요청했습니다. 현재 배치가 끝나면 학습이 멈춥니다.",
    },
    "stop_nothing": {
        "en": "No training from this page is running.",
        "ko": "이 페이지에서 진행 중인 학습이 없습니다.",
    },
    "summary_heading": {"en": "Run summary", "ko": "실행 요약"},
    "summary_table": {
        "en": "- **Architecture:** {arch}, {params} parameters\n"
        "- **Best validation top-1:** {top1} (epoch {best_epoch}), top-5 at that epoch {top5}\n"
        "- **Epochs completed:** {epochs}\n"
        "- **Training time:** {seconds}",
        "ko": "- **모델 구조:** {arch}, 파라미터 {params}개\n"
        "- **최고 검증 top-1:** {top1} (에포크 {best_epoch}), 그 에포크의 top-5 {top5}\n"
        "- **완료한 에포크:** {epochs}\n"
        "- **학습 시간:** {seconds}",
    },
    "pretrained_note": {
        "en": "Note: this run started from ImageNet weights. The Stanford Dogs photos come from ImageNet, so these "
        "scores are optimistic.",
        "ko": "참고: 이 실행은 ImageNet 가중치에서 시작했습니다. Stanford Dogs 사진은 ImageNet에서 가져온 것이므로 이 "
        "점수는 실제보다 높게 나옵니다.",
    },
    "duration_hours": {
        "en": "{hours} h {minutes:02d} min {seconds:02d} s",
        "ko": "{hours}시간 {minutes:02d}분 {seconds:02d}초",
    },
    "duration_minutes": {
        "en": "{minutes} min {seconds:02d} s",
        "ko": "{minutes}분 {seconds:02d}초",
    },
    # Plot axes, legends and series
    "plot_epoch": {"en": "epoch", "ko": "에포크"},
    "plot_loss": {"en": "loss", "ko": "손실"},
    "plot_accuracy": {"en": "accuracy (%)", "ko": "정확도 (%)"},
    "plot_series": {"en": "curve", "ko": "곡선"},
    "plot_run": {"en": "run", "ko": "실행"},
    "series_train_loss": {"en": "train loss", "ko": "학습 손실"},
    "series_val_loss": {"en": "validation loss", "ko": "검증 손실"},
    "series_batch_loss": {"en": "batch loss (smoothed)", "ko": "배치 손실 (평활)"},
    "series_train_acc": {"en": "train accuracy", "ko": "학습 정확도"},
    "series_val_top1": {"en": "validation top-1", "ko": "검증 top-1"},
    "series_val_top5": {"en": "validation top-5", "ko": "검증 top-5"},
    "column_true_breed": {"en": "true breed", "ko": "실제 품종"},
    "column_predicted_breed": {"en": "predicted as", "ko": "예측한 품종"},
    "column_count": {"en": "count", "ko": "횟수"},
    # Compare
    "compare_no_image": {
        "en": "No photo yet: upload one, take one with the webcam, paste one, or pick an example.",
        "ko": "사진이 없습니다. 사진을 올리거나, 웹캠으로 찍거나, 붙여 넣거나, 예시를 고르세요.",
    },
    "compare_heic": {
        "en": "HEIC/HEIF photos (the iPhone default) cannot be read here. Convert the photo to JPEG or PNG and "
        "upload it again (on an iPhone: Settings > Camera > Formats > Most Compatible).",
        "ko": "HEIC/HEIF 사진(아이폰 기본 형식)은 읽을 수 없습니다. JPEG 또는 PNG로 바꿔서 다시 올리세요 (아이폰: 설정 > "
        "카메라 > 포맷 > 높은 호환성).",
    },
    "compare_unreadable": {
        "en": "This file is not an image that can be read (it may be damaged or in another format). Upload a JPEG, "
        "PNG, WebP, BMP, GIF or TIFF photo.",
        "ko": "읽을 수 있는 이미지 파일이 아닙니다 (손상되었거나 다른 형식일 수 있습니다). JPEG, PNG, WebP, BMP, GIF, "
        "TIFF 사진을 올리세요.",
    },
    "compare_too_many_bytes": {
        "en": "The photo is {size} MB; the limit is {limit} MB. Upload a smaller photo or resize it first.",
        "ko": "사진 크기가 {size} MB입니다. 한도는 {limit} MB입니다. 더 작은 사진을 올리거나 먼저 크기를 줄이세요.",
    },
    "compare_too_many_pixels": {
        "en": "The photo has {width} x {height} = {megapixels} megapixels; the limit is {limit} megapixels. Resize it "
        "and upload it again.",
        "ko": "사진이 {width} x {height} = {megapixels} 메가픽셀입니다. 한도는 {limit} 메가픽셀입니다. 크기를 줄여서 "
        "다시 올리세요.",
    },
    "compare_too_many_pixels_huge": {
        "en": "The photo has far more than {limit} megapixels, the limit. Resize it and upload it again.",
        "ko": "사진이 한도인 {limit} 메가픽셀보다 훨씬 큽니다. 크기를 줄여서 다시 올리세요.",
    },
    "compare_no_cnn_run": {
        "en": "No CNN run yet. Train custom_cnn or resnet18 in the Train tab (or run `python -m dogbreeds.train "
        "--arch custom_cnn`), or load a run from the Hub below.",
        "ko": "아직 CNN 실행이 없습니다. 학습 탭에서 custom_cnn 또는 resnet18을 학습시키거나 (`python -m dogbreeds.train "
        "--arch custom_cnn`), 아래에서 Hub의 실행을 불러오세요.",
    },
    "compare_no_fcn_run": {
        "en": "No fully-connected run yet. Train resfcn18 in the Train tab (or run `python -m dogbreeds.train --arch "
        "resfcn18`), or load a run from the Hub below.",
        "ko": "아직 완전 연결 신경망 실행이 없습니다. 학습 탭에서 resfcn18을 학습시키거나 (`python -m dogbreeds.train "
        "--arch resfcn18`), 아래에서 Hub의 실행을 불러오세요.",
    },
    "compare_unknown_run": {
        "en": "The run `{run}` is not in the run list (it may have been deleted). Press Refresh run lists and pick "
        "one again.",
        "ko": "실행 `{run}`이(가) 실행 목록에 없습니다 (삭제되었을 수 있습니다). 실행 목록 새로 고침을 누르고 다시 "
        "고르세요.",
    },
    "compare_run_failed": {
        "en": "The run `{run}` could not be loaded: {detail}",
        "ko": "실행 `{run}`을(를) 불러오지 못했습니다: {detail}",
    },
    "compare_model_info": {
        "en": "**{arch}** ({family}) · {params} parameters · {ms} ms for this photo",
        "ko": "**{arch}** ({family}) · 파라미터 {params}개 · 이 사진에 {ms} ms",
    },
    "family_cnn": {"en": "CNN", "ko": "CNN"},
    "family_fcn": {"en": "fully-connected", "ko": "완전 연결"},
    "run_choice": {
        "en": "{name} · {arch} · top-1 {top1}",
        "ko": "{name} · {arch} · top-1 {top1}",
    },
    "run_choice_hub": {
        "en": "Hub: {spec} · {arch} · top-1 {top1}",
        "ko": "Hub: {spec} · {arch} · top-1 {top1}",
    },
    # Hub
    "hub_loaded": {
        "en": "Loaded `{spec}` ({arch}, commit {commit}). It is now in the {family} list.",
        "ko": "`{spec}`을(를) 불러왔습니다 ({arch}, 커밋 {commit}). 이제 {family} 목록에 있습니다.",
    },
    "hub_invalid_repo_id": {
        "en": "`{repo}` is not a valid repo id. Use the form `owner/name`, with letters, digits, `-`, `_` or `.`.",
        "ko": "`{repo}`은(는) 올바른 저장소 ID가 아닙니다. 영문자, 숫자, `-`, `_`, `.`로 된 `owner/name` 형식을 쓰세요.",
    },
    "hub_repo_not_found": {
        "en": "Repo `{repo}` not found on the Hub. Check the spelling; a private or gated repo also needs HF_TOKEN set "
        "on the server.",
        "ko": "Hub에서 저장소 `{repo}`을(를) 찾을 수 없습니다. 철자를 확인하세요. 비공개 저장소나 접근 제한 저장소는 서버에 "
        "HF_TOKEN도 설정해야 합니다.",
    },
    "hub_revision_not_found": {
        "en": "Revision `{revision}` not found in `{repo}`. Use an existing branch, tag or commit, or leave it empty "
        "for main.",
        "ko": "`{repo}`에서 리비전 `{revision}`을(를) 찾을 수 없습니다. 있는 브랜치, 태그, 커밋을 쓰거나 비워 두세요 "
        "(main).",
    },
    "hub_file_not_found": {
        "en": "`{file}` not found in `{repo}` at revision `{revision}`. A run needs config.json and model.safetensors; "
        "check the subfolder.",
        "ko": "`{repo}`의 리비전 `{revision}`에서 `{file}`을(를) 찾을 수 없습니다. 실행에는 config.json과 "
        "model.safetensors가 필요합니다. 하위 폴더를 확인하세요.",
    },
    "hub_offline": {
        "en": "No connection to the Hub, and `{repo}` is not in the local cache yet. Connect to the network and load it "
        "once; afterwards it also loads offline.",
        "ko": "Hub에 연결할 수 없고, `{repo}`이(가) 아직 로컬 캐시에 없습니다. 네트워크에 연결해서 한 번 불러오면 그 "
        "뒤로는 오프라인에서도 불러올 수 있습니다.",
    },
    "hub_not_cached": {
        "en": "Hub downloads are turned off on this server (HF_HUB_OFFLINE=1), and `{repo}` is not in the local cache.",
        "ko": "이 서버에서는 Hub 내려받기가 꺼져 있고 (HF_HUB_OFFLINE=1), `{repo}`이(가) 로컬 캐시에 없습니다.",
    },
    "hub_server_error": {
        "en": "The Hub did not answer as expected for `{repo}` ({detail}). Try again later.",
        "ko": "`{repo}`에 대해 Hub가 예상대로 응답하지 않았습니다 ({detail}). 나중에 다시 시도하세요.",
    },
    "hub_invalid_run": {
        "en": "`{repo}` does not hold a dogbreeds run: {detail}",
        "ko": "`{repo}`에는 dogbreeds 실행이 없습니다: {detail}",
    },
    "hub_cache_error": {
        "en": "The download from `{repo}` could not be saved in the Hugging Face cache: {detail}",
        "ko": "`{repo}`에서 내려받은 파일을 Hugging Face 캐시에 저장하지 못했습니다: {detail}",
    },
    # Results
    "results_none": {
        "en": "No runs yet. Train one in the Train tab, or load one from the Hub in the Compare tab.",
        "ko": "아직 실행이 없습니다. 학습 탭에서 학습시키거나 비교 탭에서 Hub의 실행을 불러오세요.",
    },
    "results_count": {"en": "{count} runs found.", "ko": "실행 {count}개를 찾았습니다."},
    "column_run": {"en": "run", "ko": "실행"},
    "column_architecture": {"en": "architecture", "ko": "모델 구조"},
    "column_family": {"en": "family", "ko": "종류"},
    "column_parameters": {"en": "parameters", "ko": "파라미터 수"},
    "column_top1": {"en": "best top-1", "ko": "최고 top-1"},
    "column_top5": {"en": "top-5", "ko": "top-5"},
    "column_epochs": {"en": "epochs", "ko": "에포크"},
    "column_train_time": {"en": "training time", "ko": "학습 시간"},
    "column_pretrained": {"en": "ImageNet start", "ko": "ImageNet 시작"},
    "yes": {"en": "yes", "ko": "예"},
    "no": {"en": "no", "ko": "아니요"},
}

_LANGUAGE_TAG = re.compile(r"^\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*$")


def i18n_tables() -> dict[str, dict[str, str]]:
    """Return LABELS rearranged per language ({"en": {key: text}, "ko": {...}}), the form gr.I18n takes."""
    return {language: {key: texts[language] for key, texts in LABELS.items()} for language in LANGUAGES}


def message(key: str, language: str, **values: Any) -> str:
    """Format MESSAGES[key] in `language` (English when the language is unknown) with `values`."""
    texts = MESSAGES[key]
    template = texts.get(language) or texts[DEFAULT_LANGUAGE]
    return template.format(**values)


def language_from_header(accept_language: str | None) -> str:
    """Pick "ko" or "en" from an Accept-Language header value, by quality weight; "en" when neither is listed."""
    best_language = DEFAULT_LANGUAGE
    best_quality = -1.0
    for item in (accept_language or "").split(","):
        tag, _, parameters = item.partition(";")
        match = _LANGUAGE_TAG.match(tag)
        if match is None:
            continue
        primary = match.group(1).lower()
        if primary not in LANGUAGES:
            continue

        quality = 1.0
        for parameter in parameters.split(";"):
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        # A strict comparison keeps the header's order for equal weights: the first listed language wins.
        if quality > best_quality:
            best_language, best_quality = primary, quality
    return best_language if best_quality > 0 else DEFAULT_LANGUAGE


def language_of(request: Any) -> str:
    """Return the language of a gr.Request (or any object with `headers`); English when there is none."""
    headers = getattr(request, "headers", None)
    if headers is None:
        return DEFAULT_LANGUAGE
    try:
        value = headers.get("accept-language") or headers.get("Accept-Language")
    except AttributeError:
        return DEFAULT_LANGUAGE
    return language_from_header(value)
